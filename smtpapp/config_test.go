package smtpapp_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestConfigErrors(t *testing.T) {
	e := newTestEnv(t)
	listen := func(addrs ...string) []any {
		var out []any
		for _, a := range addrs {
			out = append(out, map[string]any{"address": a})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		app  map[string]any
		want string
	}{
		{"no servers", map[string]any{}, "no servers defined"},
		{"auth without tls", map[string]any{"servers": map[string]any{"mx": map[string]any{
			"listen":         []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"authentication": map[string]any{"provider": "accounts"}}}}, "authentication needs TLS"},
		{"require_auth without auth", map[string]any{"servers": map[string]any{"mx": map[string]any{
			"listen": listen("127.0.0.1:0"), "require_auth": true}}}, "require_auth is set but no authentication"},
		{"bad relay network", map[string]any{"servers": map[string]any{"mx": map[string]any{
			"listen": listen("127.0.0.1:0"), "relay_networks": []string{"10.0.0.0/33"}}}}, "relay_networks"},
		{"password not a hash", map[string]any{"servers": map[string]any{"mx": map[string]any{
			"listen": listen("127.0.0.1:0"), "authentication": map[string]any{"provider": "accounts",
				"accounts": []any{map[string]any{"username": "u", "password": "plaintext"}}}}}}, "not a bcrypt or argon2id hash"},
		{"password hash from an unset variable", map[string]any{"servers": map[string]any{"mx": map[string]any{
			"listen": listen("127.0.0.1:0"), "authentication": map[string]any{"provider": "accounts",
				"accounts": []any{map[string]any{"username": "u", "password": "{env.CADDY_SMTP_TEST_UNSET_HASH}"}}}}}},
			`password hash {env.CADDY_SMTP_TEST_UNSET_HASH} is empty: is it set in Caddy's environment?`},
		{"bad tls mode", map[string]any{"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "always"}}}}}, `unknown tls mode "always"`},
		{"require_tls without tls", map[string]any{"servers": map[string]any{"mx": map[string]any{"require_tls": true,
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}}}}}, "require_tls is set but every listener has tls off"},
		{"address twice", map[string]any{"servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0", "tcp/127.0.0.1:0")}}}, "address listed twice"},
		{"negative timeout", map[string]any{"servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0"), "read_timeout": "-1s"}}}, "timeouts must not be negative"},
		{"short lines", map[string]any{"servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0"), "max_line_length": 100}}}, "below the 1000 bytes"},
		{"negative tls_session_cache", map[string]any{"servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0"),
			"tls_session_cache": map[string]any{"max_sessions": -1}}}}, `server "mx": tls_session_cache: max_sessions and lifetime must not be negative`},
		{"negative large_messages", map[string]any{"large_messages": map[string]any{"rate": -1},
			"servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0")}}}, "large_messages: threshold and rate must not be negative"},
		{"large_messages rate too low", map[string]any{"large_messages": map[string]any{"rate": 1000},
			"servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0")}}}, "large_messages: rate must be at least 65536 bytes per second, got 1000"},
		{"bad hostname", map[string]any{"hostname": "mx example", "servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0")}}}, `hostname: "mx example" contains ' '`},
		{"null route", map[string]any{"routes": []any{nil}, "servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0")}}}, "route 0: empty definition"},
		{"route without target", map[string]any{"routes": []any{map[string]any{"domains": []string{"a.example"}}},
			"servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0")}}}, "route 0: no delivery target"},
		{"duplicate route domain", map[string]any{"routes": []any{
			map[string]any{"domains": []string{"a.example"}, "deliver": map[string]any{"target": "maildir", "path": e.mail}},
			map[string]any{"domains": []string{"A.example."}, "deliver": map[string]any{"target": "maildir", "path": e.mail}},
		}, "servers": map[string]any{"mx": map[string]any{"listen": listen("127.0.0.1:0")}}}, `domain "a.example" already routed by route 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, _ := json.Marshal(e.config(tc.app))
			err := caddy.Load(raw, true)
			if err == nil {
				_ = caddy.Stop()
				t.Fatalf("config loaded; want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
