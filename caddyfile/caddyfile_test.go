package caddyfile

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-l4" // the layer4 global option and its handlers (proxy_protocol)

	_ "github.com/caddy-smtp/caddy-smtp/modules/standard" // the smtp app and its standard modules
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

// adaptEachInput adapts every testdata/*.caddyfile in a subtest named after
// the file and hands check the JSON. Errors and warnings fail the subtest.
func adaptEachInput(t *testing.T, check func(t *testing.T, name string, out []byte)) {
	t.Helper()
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
			check(t, name, out)
		})
	}
}

// TestAdaptGolden adapts every testdata/*.caddyfile and compares the JSON
// with testdata/<name>.json. Run with -update to rewrite the JSON files,
// then read the diff before committing it.
func TestAdaptGolden(t *testing.T) {
	adaptEachInput(t, func(t *testing.T, name string, out []byte) {
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

// TestGoldenConfigsLoad provisions the JSON adapted from every
// testdata/*.caddyfile (caddy.Validate: provisioned and cleaned up, nothing
// started), so a golden file cannot show a config that the smtp app, its
// modules or caddy-l4 would refuse, such as an account whose password is
// not a hash they accept.
func TestGoldenConfigsLoad(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("ALICE_HASH", "$2a$14$K5HKQysNvi1ZLVo8rFjHB.2DbJUAC1QSoRCXnaByObXm3yjjTpZHy")
	t.Setenv("RELAY_PASSWORD", "a relay password")
	t.Setenv("PG_DSN", "postgres://gateway@127.0.0.1:1/mail") // provisioned, never dialled
	adaptEachInput(t, func(t *testing.T, _ string, out []byte) {
		var cfg caddy.Config
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatal(err)
		}
		if err := caddy.Validate(&cfg); err != nil {
			t.Errorf("loading the adapted config: %v", err)
		}
	})
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
			name: "quarantine_retention given twice",
			caddyfile: `{
	smtp {
		quarantine_retention 30d
		quarantine_retention 7d
	}
}`,
			wantErr:  "quarantine_retention",
			wantLine: "Caddyfile:4",
		},
		{
			name: "postgres store without dsn",
			caddyfile: `{
	smtp {
		queue {
			store postgres {
				node mx1
			}
		}
	}
}`,
			wantErr:  "the postgres store needs dsn",
			wantLine: "Caddyfile:4",
		},
		{
			name: "unknown queue store",
			caddyfile: `{
	smtp {
		queue {
			store mysql
		}
	}
}`,
			wantErr:  "queue store must be segments, files or a store module such as postgres",
			wantLine: "Caddyfile:4",
		},
		{
			name: "tlsa_check interval not a duration",
			caddyfile: `{
	smtp {
		tlsa_check {
			interval often
		}
	}
}`,
			wantErr:  "tlsa_check interval: want a positive duration, got 'often'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "large_messages with an argument other than off",
			caddyfile: `{
	smtp {
		large_messages fast
	}
}`,
			wantErr:  "large_messages takes 'off' or a block, not 'fast'",
			wantLine: "Caddyfile:3",
		},
		{
			name: "large_messages rate not a size",
			caddyfile: `{
	smtp {
		large_messages {
			threshold 1MiB
			rate quick
		}
	}
}`,
			wantErr:  "rate: invalid size 'quick'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "large_messages threshold twice",
			caddyfile: `{
	smtp {
		large_messages {
			threshold 1MiB
			threshold 2MiB
		}
	}
}`,
			wantErr:  "duplicate smtp large_messages option 'threshold'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "large_messages unknown option",
			caddyfile: `{
	smtp {
		large_messages {
			burst 1MiB
		}
	}
}`,
			wantErr:  "unrecognized smtp large_messages option 'burst'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "large_messages off with a block",
			caddyfile: `{
	smtp {
		large_messages off {
			rate 1MiB
		}
	}
}`,
			wantErr:  "large_messages off takes no block",
			wantLine: "Caddyfile:4",
		},
		{
			name: "relay trust_pool of an unknown source",
			caddyfile: `{
	smtp {
		route example.com {
			relay backend.example.com {
				trust_pool pki_rot local
			}
		}
	}
}`,
			wantErr:  "trust_pool: getting module named 'tls.ca_pool.source.pki_rot'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "dkim max_signatures not a number",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
			check dkim {
				max_signatures many
			}
		}
	}
}`,
			wantErr:  "max_signatures: want an integer from 1 to 100, got 'many'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "unknown dmarc option",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
			check dkim
			check dmarc {
				p reject
			}
		}
	}
}`,
			wantErr:  "unrecognized dmarc option 'p'",
			wantLine: "Caddyfile:7",
		},
		{
			name: "dmarc action that does not exist",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
			check dkim
			check dmarc {
				quarantine bounce
			}
		}
	}
}`,
			wantErr:  "quarantine: want quarantine or reject or tag, got 'bounce'",
			wantLine: "Caddyfile:7",
		},
		{
			name: "implicit TLS that could be plaintext",
			caddyfile: `{
	smtp {
		outbound {
			relay smtp.provider.example {
				tls implicit opportunistic
			}
		}
	}
}`,
			wantErr:  "implicit TLS is verify (the default) or required, not 'opportunistic'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "delay_warning neither a duration nor off",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
		}
		queue {
			delay_warning never
		}
	}
}`,
			wantErr:  "delay_warning: invalid duration 'never'",
			wantLine: "Caddyfile:7",
		},
		{
			name: "listen address that is not an address",
			caddyfile: `{
	smtp {
		server mx {
			listen 127.0.0.999:25
		}
	}
}`,
			wantErr:  "listen 127.0.0.999:25: host \"127.0.0.999\" is neither an IP address nor a host name",
			wantLine: "Caddyfile:4",
		},
		{
			name: "listen port out of range",
			caddyfile: `{
	smtp {
		server mx {
			listen 127.0.0.1:99999
		}
	}
}`,
			wantErr:  "listen 127.0.0.1:99999: invalid start port",
			wantLine: "Caddyfile:4",
		},
		{
			name: "route block left open swallows the queue option",
			caddyfile: `{
	smtp {
		route example.com {
			maildir /var/mail/{local}
		queue {
			path /var/spool/smtp
		}
	}
}`,
			wantErr:  "route has a second delivery target 'queue'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "server block left open swallows the queue option",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
		queue {
			path /var/spool/smtp
		}
	}
}`,
			wantErr:  "unrecognized smtp server option 'queue'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "server block left open, then a route: braces do not balance",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
		route example.com {
			maildir /var/mail/{local}
		}
	}
}`,
			wantErr: "Caddyfile:1: this block is not closed at the end of the file",
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
			wantErr:  "unrecognized route target 'mbox' (known: lmtp, maildir, mx, relay)",
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
			wantErr:  "route needs recipient domains ('route example.com { ... }') or a match block",
			wantLine: "Caddyfile:3",
		},
		{
			name: "unknown matcher",
			caddyfile: `{
	smtp {
		route example.com {
			match {
				helo mail.example
			}
			maildir /var/mail
		}
	}
}`,
			wantErr:  "unrecognized matcher 'helo' (known: ",
			wantLine: "Caddyfile:5",
		},
		{
			name: "duplicate matcher",
			caddyfile: `{
	smtp {
		route {
			match {
				sender_domain a.example
				sender_domain b.example
			}
			maildir /var/mail
		}
	}
}`,
			wantErr:  "duplicate matcher 'sender_domain'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "empty match block",
			caddyfile: `{
	smtp {
		route {
			match {
			}
			maildir /var/mail
		}
	}
}`,
			wantErr:  "empty match block",
			wantLine: "Caddyfile:4",
		},
		{
			name: "matcher without values",
			caddyfile: `{
	smtp {
		route {
			match {
				remote_ip
			}
			maildir /var/mail
		}
	}
}`,
			wantErr:  "wrong argument count",
			wantLine: "Caddyfile:5",
		},
		{
			name: "bare_line_endings value",
			caddyfile: `{
	smtp {
		server mx {
			listen :25
			bare_line_endings fix
		}
	}
}`,
			wantErr:  "bare_line_endings must be reject or normalize, not 'fix'",
			wantLine: "Caddyfile:5",
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
			wantErr:  "maildir: unknown option '/b' (want create_mailboxes)",
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
			wantErr:  "unrecognized outbound target 'smarthost' (known: lmtp, maildir, mx, relay)",
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
			wantErr:  `tls: unknown tls level "must" (want `,
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
				dnssec on
			}
		}
	}
}`,
			wantErr:  "unrecognized mx option 'dnssec'",
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
				tls dnssec
			}
		}
	}
}`,
			wantErr:  `tls: unknown tls level "dnssec"`,
			wantLine: "Caddyfile:5",
		},
		{
			name: "authentication without accounts",
			caddyfile: `{
	smtp {
		server submission {
			authentication {
			}
		}
	}
}`,
			wantErr:  "authentication has no accounts; give them in its block, e.g. 'account alice <password-hash>'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "account with one argument",
			caddyfile: `{
	smtp {
		server submission {
			authentication {
				account alice
			}
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'alice'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "account with a plaintext password",
			caddyfile: `{
	smtp {
		server submission {
			authentication {
				account alice secret
			}
		}
	}
}`,
			wantErr:  "account 'alice': password is not a bcrypt or argon2id hash (make one with `caddy hash-password`)",
			wantLine: "Caddyfile:5",
		},
		{
			name: "account with a bad sender",
			caddyfile: `{
	smtp {
		server submission {
			authentication {
				account alice {env.ALICE_HASH} alice@example.com example.com
			}
		}
	}
}`,
			wantErr:  "account 'alice': sender 'example.com': want an address, '@domain' or '*'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "account with a block",
			caddyfile: `{
	smtp {
		server submission {
			authentication {
				account alice {env.ALICE_HASH} {
					sender alice@example.com
				}
			}
		}
	}
}`,
			wantErr:  "authentication option 'account' takes no block",
			wantLine: "Caddyfile:5",
		},
		{
			name: "duplicate account",
			caddyfile: `{
	smtp {
		server submission {
			authentication {
				account alice {env.ALICE_HASH}
				account bob {env.BOB_HASH}
				account alice {env.ALICE_HASH2}
			}
		}
	}
}`,
			wantErr:  "duplicate account 'alice'",
			wantLine: "Caddyfile:7",
		},
		{
			name: "unknown authentication option",
			caddyfile: `{
	smtp {
		server submission {
			authentication {
				user alice {env.ALICE_HASH}
			}
		}
	}
}`,
			wantErr:  "unrecognized authentication option 'user' (want 'account')",
			wantLine: "Caddyfile:5",
		},
		{
			name: "unknown authentication provider",
			caddyfile: `{
	smtp {
		server submission {
			authentication ldap {
				url ldap://ldap.example.com
			}
		}
	}
}`,
			wantErr:  "unrecognized authentication provider 'ldap' (known: accounts, ",
			wantLine: "Caddyfile:4",
		},
		{
			name: "argument to the accounts provider",
			caddyfile: `{
	smtp {
		server submission {
			authentication accounts /etc/smtp/users {
				account alice {env.ALICE_HASH}
			}
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after '/etc/smtp/users'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate authentication",
			caddyfile: `{
	smtp {
		server submission {
			authentication {
				account alice {env.ALICE_HASH}
			}
			authentication {
				account bob {env.BOB_HASH}
			}
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'authentication'",
			wantLine: "Caddyfile:7",
		},
		{
			name: "require_auth without authentication",
			caddyfile: `{
	smtp {
		server submission {
			listen :587
			require_auth
		}
	}
}`,
			wantErr:  "smtp server 'submission': require_auth needs an authentication block in the same server",
			wantLine: "Caddyfile:5",
		},
		{
			name: "argument to require_auth",
			caddyfile: `{
	smtp {
		server submission {
			require_auth yes
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'yes'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate require_auth",
			caddyfile: `{
	smtp {
		server submission {
			authentication {
				account alice {env.ALICE_HASH}
			}
			require_auth
			require_auth
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'require_auth'",
			wantLine: "Caddyfile:8",
		},
		{
			name: "relay_networks without networks",
			caddyfile: `{
	smtp {
		server mx {
			relay_networks
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'relay_networks'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad relay_networks prefix length",
			caddyfile: `{
	smtp {
		server mx {
			relay_networks 127.0.0.1 10.0.0.0/33
		}
	}
}`,
			wantErr:  "relay_networks: '10.0.0.0/33' is not an IP address or CIDR network",
			wantLine: "Caddyfile:4",
		},
		{
			name: "relay_networks host name",
			caddyfile: `{
	smtp {
		server mx {
			relay_networks app.internal
		}
	}
}`,
			wantErr:  "relay_networks: 'app.internal' is not an IP address or CIDR network",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate relay_networks",
			caddyfile: `{
	smtp {
		server mx {
			relay_networks 10.0.0.0/8
			relay_networks 192.168.0.0/16
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'relay_networks'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "bad per-ip limit",
			caddyfile: `{
	smtp {
		server mx {
			max_connections_per_ip lots
		}
	}
}`,
			wantErr:  "max_connections_per_ip: want a positive integer or 'off', got 'lots'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "negative per-ip rate",
			caddyfile: `{
	smtp {
		server mx {
			connection_rate_per_ip -1
		}
	}
}`,
			wantErr:  "connection_rate_per_ip: want a positive integer or 'off', got '-1'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "zero per-ip rate",
			caddyfile: `{
	smtp {
		server mx {
			message_rate_per_ip 0
		}
	}
}`,
			wantErr:  "message_rate_per_ip: want a positive integer or 'off', got '0'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "missing per-ip rate",
			caddyfile: `{
	smtp {
		server mx {
			recipient_rate_per_ip
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'recipient_rate_per_ip'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate per-ip limit set off",
			caddyfile: `{
	smtp {
		server mx {
			recipient_rate_per_ip off
			recipient_rate_per_ip 100
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'recipient_rate_per_ip'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "per-connection limit off",
			caddyfile: `{
	smtp {
		server mx {
			max_messages_per_connection off
		}
	}
}`,
			wantErr:  "max_messages_per_connection: want a positive integer, got 'off'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "bad max_recipients_per_connection",
			caddyfile: `{
	smtp {
		server mx {
			max_recipients_per_connection 1e4
		}
	}
}`,
			wantErr:  "max_recipients_per_connection: want a positive integer, got '1e4'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "zero max_bad_commands",
			caddyfile: `{
	smtp {
		server mx {
			max_bad_commands 0
		}
	}
}`,
			wantErr:  "max_bad_commands: want a positive integer, got '0'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "negative max_auth_failures",
			caddyfile: `{
	smtp {
		server mx {
			max_auth_failures -5
		}
	}
}`,
			wantErr:  "max_auth_failures: want a positive integer, got '-5'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate max_auth_failures",
			caddyfile: `{
	smtp {
		server mx {
			max_auth_failures 3
			max_auth_failures 5
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'max_auth_failures'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "bad max_session_duration",
			caddyfile: `{
	smtp {
		server mx {
			max_session_duration forever
		}
	}
}`,
			wantErr:  "max_session_duration: invalid duration 'forever'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "unknown tls_session_cache option",
			caddyfile: `{
	smtp {
		server mx {
			tls_session_cache {
				max_sessions 10
				tickets on
			}
		}
	}
}`,
			wantErr:  "unrecognized tls_session_cache option 'tickets'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "tls_session_cache with an argument",
			caddyfile: `{
	smtp {
		server mx {
			tls_session_cache 100
		}
	}
}`,
			wantErr:  "wrong argument count",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate tls_session_cache",
			caddyfile: `{
	smtp {
		server mx {
			tls_session_cache
			tls_session_cache {
				lifetime 1m
			}
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'tls_session_cache'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "bad tls_session_cache max_sessions",
			caddyfile: `{
	smtp {
		server mx {
			tls_session_cache {
				lifetime 1h
				max_sessions lots
			}
		}
	}
}`,
			wantErr:  "max_sessions: want a positive integer, got 'lots'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "tls_session_cache max_sessions without a value",
			caddyfile: `{
	smtp {
		server mx {
			tls_session_cache {
				max_sessions
			}
		}
	}
}`,
			wantErr:  "wrong argument count",
			wantLine: "Caddyfile:5",
		},
		{
			name: "duplicate tls_session_cache lifetime",
			caddyfile: `{
	smtp {
		server mx {
			tls_session_cache {
				lifetime 1m
				lifetime 2m
			}
		}
	}
}`,
			wantErr:  "duplicate tls_session_cache option 'lifetime'",
			wantLine: "Caddyfile:6",
		},
		{
			name: "zero tls_handshake_timeout",
			caddyfile: `{
	smtp {
		server mx {
			tls_handshake_timeout 0s
		}
	}
}`,
			wantErr:  "tls_handshake_timeout: duration must be greater than zero, got '0s'",
			wantLine: "Caddyfile:4",
		},
		{
			name: "duplicate max_session_duration",
			caddyfile: `{
	smtp {
		server mx {
			max_session_duration 1h
			max_session_duration 2h
		}
	}
}`,
			wantErr:  "duplicate smtp server option 'max_session_duration'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "layer4 smtp handler without server",
			caddyfile: `{
	layer4 {
		:25 {
			route {
				smtp
			}
		}
	}
}`,
			wantErr:  "wrong argument count or unexpected line ending after 'smtp'",
			wantLine: "Caddyfile:5",
		},
		{
			name: "layer4 smtp handler with unknown mode",
			caddyfile: `{
	layer4 {
		:587 {
			route {
				smtp submission starttls
			}
		}
	}
}`,
			wantErr:  "unknown smtp handler option 'starttls' (want implicit_tls)",
			wantLine: "Caddyfile:5",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// On disk, as `caddy adapt --config Caddyfile` reads it.
			t.Chdir(t.TempDir())
			if err := os.WriteFile("Caddyfile", []byte(tc.caddyfile), 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := adapt(t, "Caddyfile", []byte(tc.caddyfile))
			if err == nil {
				t.Fatalf("adapting succeeded, want an error containing %q", tc.wantErr)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantErr) {
				t.Errorf("error %q does not contain %q", msg, tc.wantErr)
			}
			if tc.wantLine != "" && !strings.HasSuffix(msg, "at "+tc.wantLine) {
				t.Errorf("error %q does not end with position %q", msg, tc.wantLine)
			}
		})
	}
}
