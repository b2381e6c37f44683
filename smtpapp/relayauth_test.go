package smtpapp_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// TestRelayAuthLogsInToVerifiedRelay: a smarthost with a certificate from
// the CA in ca_file gets the configured login over STARTTLS, then the
// message.
func TestRelayAuthLogsInToVerifiedRelay(t *testing.T) {
	e := newTestEnv(t)
	ca := testutil.NewCA(t)
	relay := testutil.StartAuthServer(t, ca.Issue(t, "127.0.0.1"), "gateway", "s3cret pass")
	addr, app := e.startRelayGateway(map[string]any{"hosts": []string{relay.Addr}, "tls": "verify",
		"ca_file": ca.PEMFile(t), "auth": map[string]any{"username": "gateway", "password": "s3cret pass"}})
	submit(t, addr, "a@sender.test", "Subject: auth\r\nMessage-ID: <auth@test>\r\n\r\nhello", "user@example.test")
	eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })

	logins := relay.Logins()
	if len(logins) != 1 || logins[0].Username != "gateway" || logins[0].Password != "s3cret pass" {
		t.Fatalf("logins %q, want one as gateway with the configured password", logins)
	}
	msgs := relay.Messages()
	if len(msgs) != 1 || msgs[0].User != "gateway" || msgs[0].From != "a@sender.test" ||
		len(msgs[0].To) != 1 || msgs[0].To[0] != "user@example.test" ||
		!strings.Contains(string(msgs[0].Data), "Message-ID: <auth@test>") {
		t.Fatalf("relayed messages: %+v", msgs)
	}
}

// TestRelayAuthInterceptorGetsNoPassword: something on the path answers
// with a self-signed certificate. It never sees an AUTH command, and the
// message stays in the queue for the next attempt.
func TestRelayAuthInterceptorGetsNoPassword(t *testing.T) {
	e := newTestEnv(t)
	ca := testutil.NewCA(t) // the CA the real relay would use
	mitm := testutil.StartAuthServer(t, testutil.SelfSigned(t, "127.0.0.1"), "gateway", "s3cret")
	addr, app := e.startRelayGateway(map[string]any{"hosts": []string{mitm.Addr}, "tls": "verify",
		"ca_file": ca.PEMFile(t), "auth": map[string]any{"username": "gateway", "password": "s3cret"}})
	submit(t, addr, "a@sender.test", "Subject: mitm\r\n\r\nsecret body", "user@example.test")
	eventually(t, "two deferred attempts", func() bool {
		if mitm.AuthAttempts.Load() > 0 {
			return true // fail below, with the reason
		}
		msgs := app.TestQueue().Messages()
		return len(msgs) == 1 && msgs[0].Attempts >= 2
	})
	if mitm.Handshakes.Load() == 0 {
		t.Fatal("no TLS handshake with the interceptor: the test proves nothing")
	}
	if n := mitm.AuthAttempts.Load(); n != 0 {
		t.Fatalf("the interceptor received %d AUTH commands (%v)", n, mitm.Logins())
	}
	if n := len(mitm.Messages()); n != 0 {
		t.Fatalf("the interceptor received %d messages", n)
	}
	if len(e.mailFiles("sender.test", "a")) != 0 {
		t.Error("a DSN for a temporary failure")
	}
}

// TestRelayAuthNeedsVerifyConfig: a config with auth below tls verify does
// not load.
func TestRelayAuthNeedsVerifyConfig(t *testing.T) {
	for _, level := range []string{"", "none", "opportunistic", "required"} {
		t.Run("tls="+level, func(t *testing.T) {
			e := newTestEnv(t)
			relay := map[string]any{"target": "relay", "hosts": []string{"smarthost.test:587"},
				"auth": map[string]any{"username": "gateway", "password": "s3cret"}}
			if level != "" {
				relay["tls"] = level
			}
			raw, err := json.Marshal(e.config(map[string]any{"outbound": relay}))
			if err != nil {
				t.Fatal(err)
			}
			err = caddy.Validate(mustConfig(t, raw))
			if err == nil || !strings.Contains(err.Error(), "relay: auth needs tls verify") {
				t.Fatalf("loading auth with tls %q: %v; want the auth needs tls verify error", level, err)
			}
		})
	}
}

func mustConfig(t *testing.T, raw []byte) *caddy.Config {
	t.Helper()
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}
