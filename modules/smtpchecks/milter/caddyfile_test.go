package milter_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	_ "github.com/caddy-smtp/caddy-smtp/caddyfile"        // the smtp global option
	_ "github.com/caddy-smtp/caddy-smtp/modules/standard" // the smtp modules
)

// TestCaddyfileErrors: mistakes in a `check milter` line or block are
// refused when the Caddyfile is adapted, saying what and where.
func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		check, want string
	}{
		{"check milter", "wrong argument count or unexpected line ending after 'milter', at Caddyfile:5"},
		{"check milter 127.0.0.1:8891 extra", "wrong argument count or unexpected line ending after 'extra', at Caddyfile:5"},
		{"check milter 127.0.0.1", "milter: address '127.0.0.1': want host:port, at Caddyfile:5"},
		{"check milter udp/127.0.0.1:8891", "network udp: want tcp or unix, at Caddyfile:5"},
		{"check milter 127.0.0.1:8891 {\n\t\t\t\tdefault_action discard\n\t\t\t}", "default_action: want accept or tempfail or reject, got 'discard', at Caddyfile:6"},
		{"check milter 127.0.0.1:8891 {\n\t\t\t\ttimeout 0s\n\t\t\t}", "timeout: duration must be greater than zero, got '0s', at Caddyfile:6"},
		{"check milter 127.0.0.1:8891 {\n\t\t\t\ttimeout 1s\n\t\t\t\ttimeout 2s\n\t\t\t}", "duplicate milter option 'timeout', at Caddyfile:7"},
		{"check milter 127.0.0.1:8891 {\n\t\t\t\tmacros j\n\t\t\t}", "unrecognized milter option 'macros', at Caddyfile:6"},
	} {
		body := "{\n\tsmtp {\n\t\tserver mx {\n\t\t\tlisten :25\n\t\t\t" + tc.check + "\n\t\t}\n\t}\n}\n"
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.check, err, tc.want)
		}
	}
}
