package caddyfile

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-smtp/caddy-smtp/smtpapp" // registers the smtp app and its targets
)

var update = flag.Bool("update", false, "rewrite the golden JSON files in testdata/")

// adapt runs the Caddyfile adapter on body, as `caddy adapt` does.
func adapt(t *testing.T, filename string, body []byte) ([]byte, []caddyconfig.Warning, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("caddyfile adapter not registered")
	}
	return adapter.Adapt(body, map[string]any{"filename": filename})
}

// TestAdaptGolden adapts every testdata/*.caddyfile and compares the JSON
// with testdata/<name>.json. Run with -update to rewrite the JSON files,
// then read the diff before committing it.
func TestAdaptGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no testdata/*.caddyfile files")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := adapt(t, in, body)
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w.String())
			}
			var indented bytes.Buffer
			if err := json.Indent(&indented, out, "", "\t"); err != nil {
				t.Fatalf("indenting %s: %v", out, err)
			}
			indented.WriteByte('\n')

			golden := filepath.Join("testdata", name+".json")
			if *update {
				if err := os.WriteFile(golden, indented.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got := indented.String(); got != string(want) {
				t.Errorf("adapted JSON differs from %s\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

// TestAdaptErrors checks that each mistake is refused with a message saying
// what is wrong and where.
func TestAdaptErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		caddyfile string
		wantErr   string // substring of the error
		wantLine  string // the error must end with this position
	}{
		{
			name: "unknown smtp option",
			caddyfile: `{
	smtp {
		hostnme mx.example.com
	}
}`,
			wantErr:  "unrecognized smtp option 'hostnme'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "unknown server option",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
			max_size 10MB
		}
	}
}`,
			wantErr:  "unrecognized smtp server option 'max_size'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "unknown tls option",
			caddyfile: `{
	smtp {
		server mx {
			tls {
				protocol tls1.3
			}
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'protocol'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "unknown target",
			caddyfile: `{
	smtp {
		route example.com {
			mbox /var/mail
		}
	}
}`,
			wantErr:  "unrecognized route target 'mbox' (known: maildir)",
			wantLine: "Caddyfile:4",
		},
		{
			name: "arguments to smtp",
			caddyfile: `{
	smtp mx {
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'mx'",
			wantLine: "Caddyfile:2",
		},
		{
			name: "missing hostname",
			caddyfile: `{
	smtp {
		hostname
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'hostname'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "empty hostname",
			caddyfile: `{
	smtp {
		hostname ""
	}
}`,
			wantErr:  "hostname: empty value",
			wantLine: "Caddyfile:3",
		},
		{
			name: "too many arguments",
			caddyfile: `{
	smtp {
		grace_period 10s 20s
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after '20s'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "block after single-valued option",
			caddyfile: `{
	smtp {
		spool_dir /var/spool {
			mode 0700
		}
	}
}`,
			wantErr:  "option 'spool_dir' takes no block",
			wantLine: "Caddyfile:3",
		},
		{
			name: "missing server name",
			caddyfile: `{
	smtp {
		server {
			listen :25
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'server'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "missing listen address",
			caddyfile: `{
	smtp {
		server mx {
			listen
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'listen'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "argument to require_tls",
			caddyfile: `{
	smtp {
		server mx {
			require_tls yes
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'yes'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "missing route domain",
			caddyfile: `{
	smtp {
		route {
			maildir /var/mail
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'route'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "missing maildir path",
			caddyfile: `{
	smtp {
		route example.com {
			maildir
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'maildir'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "two maildir paths",
			caddyfile: `{
	smtp {
		route example.com {
			maildir /a /b
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after '/b'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad duration",
			caddyfile: `{
	smtp {
		server mx {
			read_timeout 5minutes
		}
	}
}`,
			wantErr:  "read_timeout: invalid duration '5minutes'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "unparsable duration",
			caddyfile: `{
	smtp {
		grace_period soon
	}
}`,
			wantErr:  "grace_period: invalid duration 'soon'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "zero duration",
			caddyfile: `{
	smtp {
		server mx {
			certificate_wait 0s
		}
	}
}`,
			wantErr:  "certificate_wait: duration must be greater than zero, got '0s'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad size",
			caddyfile: `{
	smtp {
		server mx {
			max_message_size 25XB
		}
	}
}`,
			wantErr:  "max_message_size: invalid size '25XB'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "zero size",
			caddyfile: `{
	smtp {
		server mx {
			max_message_size 0
		}
	}
}`,
			wantErr:  "max_message_size: size must be greater than zero, got '0'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "size too large",
			caddyfile: `{
	smtp {
		server mx {
			max_message_size 16EiB
		}
	}
}`,
			wantErr:  "max_message_size:",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad int",
			caddyfile: `{
	smtp {
		server mx {
			max_recipients lots
		}
	}
}`,
			wantErr:  "max_recipients: want a positive integer, got 'lots'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "negative int",
			caddyfile: `{
	smtp {
		server mx {
			max_connections -1
		}
	}
}`,
			wantErr:  "max_connections: want a positive integer, got '-1'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad listen mode",
			caddyfile: `{
	smtp {
		server mx {
			listen :465 implicit
		}
	}
}`,
			wantErr:  "listen :465: unknown tls mode 'implicit' (want starttls, implicit_tls or no_tls)",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad on/off",
			caddyfile: `{
	smtp {
		automatic_certificates false
	}
}`,
			wantErr:  "automatic_certificates: want 'on' or 'off', got 'false'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "duplicate smtp option",
			caddyfile: `{
	smtp {
		hostname a.example.com
		hostname b.example.com
	}
}`,
			wantErr:  "duplicate smtp option 'hostname'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate smtp option across blocks",
			caddyfile: `{
	smtp {
		automatic_certificates off
	}
	smtp {
		automatic_certificates on
	}
}`,
			wantErr:  "duplicate smtp option 'automatic_certificates'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "duplicate server option",
			caddyfile: `{
	smtp {
		server mx {
			read_timeout 1m
			read_timeout 2m
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'read_timeout'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "duplicate require_tls",
			caddyfile: `{
	smtp {
		server mx {
			require_tls
			require_tls
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'require_tls'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "duplicate tls block",
			caddyfile: `{
	smtp {
		server mx {
			tls {
				protocols tls1.3
			}
			tls {
				curves x25519
			}
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'tls'",
			wantLine: "Caddyfile:7",
		},
		{
			name: "duplicate server",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
		}
		server mx {
			listen :2525
		}
	}
}`,
			wantErr:  "duplicate smtp server 'mx'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "duplicate server across blocks",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
		}
	}
	smtp {
		server mx {
			listen :2525
		}
	}
}`,
			wantErr:  "duplicate smtp server 'mx'",
			wantLine: "Caddyfile:8",
		},
		{
			name: "route without target",
			caddyfile: `{
	smtp {
		route example.com {
		}
	}
}`,
			wantErr:  "route has no delivery target",
			wantLine: "Caddyfile:3",
		},
		{
			name: "route without block",
			caddyfile: `{
	smtp {
		hostname mx.example.com
		route example.com
	}
}`,
			wantErr:  "route has no delivery target",
			wantLine: "Caddyfile:4",
		},
		{
			name: "route with two targets",
			caddyfile: `{
	smtp {
		route example.com {
			maildir /var/mail/a
			maildir /var/mail/b
		}
	}
}`,
			wantErr:  "route has a second delivery target 'maildir' (already has 'maildir')",
			wantLine: "Caddyfile:5",
		},
		{
			name: "block after maildir",
			caddyfile: `{
	smtp {
		route example.com {
			maildir /var/mail {
				fsync off
			}
		}
	}
}`,
			wantErr:  "maildir takes no block",
			wantLine: "Caddyfile:4",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := adapt(t, "Caddyfile", []byte(tc.caddyfile))
			if err == nil {
				t.Fatalf("adapting succeeded, want an error containing %q", tc.wantErr)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantErr) {
				t.Errorf("error %q does not contain %q", msg, tc.wantErr)
			}
			if !strings.HasSuffix(msg, "at "+tc.wantLine) {
				t.Errorf("error %q does not end with position %q", msg, tc.wantLine)
			}
		})
	}
}
