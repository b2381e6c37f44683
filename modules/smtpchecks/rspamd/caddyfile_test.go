package rspamd_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	_ "github.com/caddy-smtp/caddy-smtp/caddyfile" // the smtp global option
)

// TestCaddyfileErrors checks that mistakes in `check rspamd` are refused
// at adapt time with what is wrong and the file and line.
func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, check, want string }{
		{"url with a path", "check rspamd http://127.0.0.1:11333/checkv2", "rspamd: url 'http://127.0.0.1:11333/checkv2': want http://host:port, at Caddyfile:5"},
		{"url without a scheme", "check rspamd 127.0.0.1:11333", "want http://host:port, at Caddyfile:5"},
		{"two urls", "check rspamd http://a:1 http://b:2", "wrong argument count or unexpected line ending after 'http://b:2', at Caddyfile:5"},
		{"unknown option", "check rspamd {\n\t\t\t\tscore 5\n\t\t\t}", "unrecognized rspamd option 'score', at Caddyfile:6"},
		{"duplicate", "check rspamd {\n\t\t\t\ttimeout 1s\n\t\t\t\ttimeout 2s\n\t\t\t}", "duplicate rspamd option 'timeout', at Caddyfile:7"},
		{"bad timeout", "check rspamd {\n\t\t\t\ttimeout 0s\n\t\t\t}", "timeout: duration must be greater than zero, got '0s', at Caddyfile:6"},
		{"bad fail_open", "check rspamd {\n\t\t\t\tfail_open yes\n\t\t\t}", "fail_open: want on or off, got 'yes', at Caddyfile:6"},
		{"bad score", "check rspamd {\n\t\t\t\tquarantine_at high\n\t\t\t}", "quarantine_at: want a score such as 10 or 7.5, got 'high', at Caddyfile:6"},
		{"NaN score", "check rspamd {\n\t\t\t\tquarantine_at NaN\n\t\t\t}", "quarantine_at: want a score such as 10 or 7.5, got 'NaN', at Caddyfile:6"},
		{"bad add_header", "check rspamd {\n\t\t\t\tadd_header reject\n\t\t\t}", "add_header: want tag or quarantine, got 'reject', at Caddyfile:6"},
		{"bad greylist", "check rspamd {\n\t\t\t\tgreylist pass\n\t\t\t}", "greylist: want tempfail or accept, got 'pass', at Caddyfile:6"},
		{"password without value", "check rspamd {\n\t\t\t\tpassword\n\t\t\t}", "wrong argument count or unexpected line ending after 'password', at Caddyfile:6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := "{\n\tsmtp {\n\t\tserver mx {\n\t\t\tlisten :25\n\t\t\t" + tc.check + "\n\t\t}\n\t}\n}\n"
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
