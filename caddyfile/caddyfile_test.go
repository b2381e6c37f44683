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
			wantErr:  "unrecognized route target 'mbox' (known: maildir, mx, relay)",
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
		hostname mx.example.com {
			alias mail.example.com
		}
	}
}`,
			wantErr:  "option 'hostname' takes no block",
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
		{
			name: "spool_dir replaced by queue",
			caddyfile: `{
	smtp {
		spool_dir /var/spool/smtp
	}
}`,
			wantErr:  "smtp option 'spool_dir' was replaced by the queue block: 'queue { path <dir> }'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "unknown queue option",
			caddyfile: `{
	smtp {
		queue {
			dir /var/spool/smtp
		}
	}
}`,
			wantErr:  "unrecognized smtp queue option 'dir'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "queue with an argument",
			caddyfile: `{
	smtp {
		queue /var/spool/smtp
	}
}`,
			wantErr:  "queue takes no arguments; give the spool directory as 'path <dir>' in its block",
			wantLine: "Caddyfile:3",
		},
		{
			name: "bad queue duration",
			caddyfile: `{
	smtp {
		queue {
			max_age 5days
		}
	}
}`,
			wantErr:  "max_age: invalid duration '5days'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "zero queue duration",
			caddyfile: `{
	smtp {
		queue {
			retry_initial 0s
		}
	}
}`,
			wantErr:  "retry_initial: duration must be greater than zero, got '0s'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad queue size",
			caddyfile: `{
	smtp {
		queue {
			max_return_size 1XB
		}
	}
}`,
			wantErr:  "max_return_size: invalid size '1XB'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad queue int",
			caddyfile: `{
	smtp {
		queue {
			workers many
		}
	}
}`,
			wantErr:  "workers: want a positive integer, got 'many'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "zero queue int",
			caddyfile: `{
	smtp {
		queue {
			messages_per_connection 0
		}
	}
}`,
			wantErr:  "messages_per_connection: want a positive integer, got '0'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate queue option",
			caddyfile: `{
	smtp {
		queue {
			path /a
			path /b
		}
	}
}`,
			wantErr:  "duplicate smtp queue option 'path'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "duplicate queue",
			caddyfile: `{
	smtp {
		queue {
			path /a
		}
		queue {
			workers 4
		}
	}
}`,
			wantErr:  "duplicate smtp option 'queue'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "duplicate empty queue across blocks",
			caddyfile: `{
	smtp {
		queue
	}
	smtp {
		queue {
			path /b
		}
	}
}`,
			wantErr:  "duplicate smtp option 'queue'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "outbound without target",
			caddyfile: `{
	smtp {
		outbound {
		}
	}
}`,
			wantErr:  "outbound has no delivery target; give one in its block, e.g. 'mx'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "outbound without block",
			caddyfile: `{
	smtp {
		outbound
	}
}`,
			wantErr:  "outbound has no delivery target",
			wantLine: "Caddyfile:3",
		},
		{
			name: "outbound target on its line",
			caddyfile: `{
	smtp {
		outbound mx
	}
}`,
			wantErr:  "outbound takes no arguments; give its target in its block, e.g. 'outbound { mx }'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "outbound with two targets",
			caddyfile: `{
	smtp {
		outbound {
			mx
			relay smarthost.example.com
		}
	}
}`,
			wantErr:  "outbound has a second delivery target 'relay' (already has 'mx'); it takes exactly one",
			wantLine: "Caddyfile:5",
		},
		{
			name: "unknown outbound target",
			caddyfile: `{
	smtp {
		outbound {
			smarthost mail.example.com
		}
	}
}`,
			wantErr:  "unrecognized outbound target 'smarthost' (known: maildir, mx, relay)",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate outbound across blocks",
			caddyfile: `{
	smtp {
		outbound {
			mx
		}
	}
	smtp {
		outbound {
			relay smarthost.example.com
		}
	}
}`,
			wantErr:  "duplicate smtp option 'outbound'",
			wantLine: "Caddyfile:8",
		},
		{
			name: "relay without hosts",
			caddyfile: `{
	smtp {
		route example.com {
			relay {
				tls required
			}
		}
	}
}`,
			wantErr:  "relay needs at least one host, e.g. 'relay smarthost.example.com:587'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "relay host with bad port",
			caddyfile: `{
	smtp {
		route example.com {
			relay mail.example.com:smtp
		}
	}
}`,
			wantErr:  "relay host 'mail.example.com:smtp': port \"smtp\" is not a number from 1 to 65535",
			wantLine: "Caddyfile:4",
		},
		{
			name: "relay host without name",
			caddyfile: `{
	smtp {
		route example.com {
			relay :587
		}
	}
}`,
			wantErr:  "relay host ':587': empty host name",
			wantLine: "Caddyfile:4",
		},
		{
			name: "relay host with too many colons",
			caddyfile: `{
	smtp {
		route example.com {
			relay mail.example.com:25:26
		}
	}
}`,
			wantErr:  "relay host 'mail.example.com:25:26': want host or host:port",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad relay tls level",
			caddyfile: `{
	smtp {
		outbound {
			relay smarthost.example.com:587 {
				tls must
			}
		}
	}
}`,
			wantErr:  `tls: unknown tls level "must" (want "none", "opportunistic" or "required")`,
			wantLine: "Caddyfile:5",
		},
		{
			name: "relay auth with one argument",
			caddyfile: `{
	smtp {
		outbound {
			relay smarthost.example.com:587 {
				auth apikey
			}
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'apikey'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "relay auth with empty password",
			caddyfile: `{
	smtp {
		outbound {
			relay smarthost.example.com:587 {
				auth apikey ""
			}
		}
	}
}`,
			wantErr:  "auth: empty username or password",
			wantLine: "Caddyfile:5",
		},
		{
			name: "unknown relay option",
			caddyfile: `{
	smtp {
		route example.com {
			relay backend.example.com {
				starttls required
			}
		}
	}
}`,
			wantErr:  "unrecognized relay option 'starttls'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "duplicate relay option",
			caddyfile: `{
	smtp {
		route example.com {
			relay backend.example.com {
				connect_timeout 10s
				connect_timeout 20s
			}
		}
	}
}`,
			wantErr:  "duplicate relay option 'connect_timeout'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "bad relay connect_timeout",
			caddyfile: `{
	smtp {
		route example.com {
			relay backend.example.com {
				connect_timeout -5s
			}
		}
	}
}`,
			wantErr:  "connect_timeout: duration must be greater than zero, got '-5s'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "block after relay option",
			caddyfile: `{
	smtp {
		route example.com {
			relay backend.example.com {
				auth {
					username u
				}
			}
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'auth'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "block after relay tls",
			caddyfile: `{
	smtp {
		route example.com {
			relay backend.example.com {
				tls required {
					verify
				}
			}
		}
	}
}`,
			wantErr:  "relay option 'tls' takes no block",
			wantLine: "Caddyfile:5",
		},
		{
			name: "unknown mx option",
			caddyfile: `{
	smtp {
		outbound {
			mx {
				dane on
			}
		}
	}
}`,
			wantErr:  "unrecognized mx option 'dane'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "mx port too large",
			caddyfile: `{
	smtp {
		outbound {
			mx {
				port 70000
			}
		}
	}
}`,
			wantErr:  "port: want an integer from 1 to 65535, got '70000'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "mx port zero",
			caddyfile: `{
	smtp {
		outbound {
			mx {
				port 0
			}
		}
	}
}`,
			wantErr:  "port: want an integer from 1 to 65535, got '0'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "bad mx max_addresses",
			caddyfile: `{
	smtp {
		outbound {
			mx {
				max_addresses all
			}
		}
	}
}`,
			wantErr:  "max_addresses: want a positive integer, got 'all'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "mx with an argument",
			caddyfile: `{
	smtp {
		route example.com {
			mx mail.example.com
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'mail.example.com'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "mx resolvers without addresses",
			caddyfile: `{
	smtp {
		outbound {
			mx {
				resolvers
			}
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'resolvers'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "mx resolver by name",
			caddyfile: `{
	smtp {
		outbound {
			mx {
				resolvers 127.0.0.1 dns.example.net
			}
		}
	}
}`,
			wantErr:  `resolvers: dns server "dns.example.net": not an IP address with an optional port`,
			wantLine: "Caddyfile:5",
		},
		{
			name: "bad mx tls level",
			caddyfile: `{
	smtp {
		outbound {
			mx {
				tls dane
			}
		}
	}
}`,
			wantErr:  `tls: unknown tls level "dane"`,
			wantLine: "Caddyfile:5",
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
