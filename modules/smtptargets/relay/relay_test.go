package relay

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

type noMetrics struct{}

func (noMetrics) CountDeliveries([]queue.Result, string, string) {}
func (noMetrics) CountFallback(tlsupgrade.Result)                {}

const wantAuthErr = "relay: auth needs tls verify"

// TestAuthNeedsVerify: credentials are refused with every tls level but
// verify, at Validate (the JSON config).
func TestAuthNeedsVerify(t *testing.T) {
	for _, tc := range []struct {
		tls     string
		auth    bool
		wantErr bool
	}{
		{"", true, true},
		{"none", true, true},
		{"opportunistic", true, true},
		{"required", true, true},
		{"verify", true, false},
		{"required", false, false},
		{"", false, false},
	} {
		r := &Relay{Hosts: []string{"smarthost.test:587"}, TLS: tc.tls}
		if tc.auth {
			r.Auth = &RelayAuth{Username: "u", Password: "p"}
		}
		err := r.Provision(caddy.Context{})
		if err == nil {
			err = r.Validate()
		}
		switch {
		case tc.wantErr && (err == nil || !strings.Contains(err.Error(), wantAuthErr)):
			t.Errorf("tls %q, auth %v: error %v, want %q", tc.tls, tc.auth, err, wantAuthErr)
		case !tc.wantErr && err != nil:
			t.Errorf("tls %q, auth %v: %v", tc.tls, tc.auth, err)
		}
	}
}

// TestCaddyfileAuthNeedsVerify: the Caddyfile says so at adapt time,
// pointing at the auth line, whichever of tls and auth comes first.
func TestCaddyfileAuthNeedsVerify(t *testing.T) {
	for _, tc := range []struct{ in, wantLine string }{
		{"relay smarthost.test:587 {\n\ttls required\n\tauth u p\n}", "Testfile:3"},
		{"relay smarthost.test:587 {\n\tauth u p\n\ttls opportunistic\n}", "Testfile:2"},
		{"relay smarthost.test:587 {\n\tconnect_timeout 5s\n\tauth u p\n}", "Testfile:3"},
	} {
		var r Relay
		err := r.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if err == nil || !strings.Contains(err.Error(), wantAuthErr) || !strings.Contains(err.Error(), tc.wantLine) {
			t.Errorf("%q: error %v, want %q at %s", tc.in, err, wantAuthErr, tc.wantLine)
		}
	}
	var r Relay
	if err := r.UnmarshalCaddyfile(caddyfile.NewTestDispenser("relay smarthost.test:587 {\n\ttls verify\n\tauth u p\n}")); err != nil {
		t.Errorf("tls verify with auth: %v", err)
	}
}

// TestLoginRefusesUnverifiedTLS is the second line of defence: even with
// Validate bypassed (a relay at level required), login sends no AUTH to a
// peer whose certificate does not verify, and the attempt is temporary.
func TestLoginRefusesUnverifiedTLS(t *testing.T) {
	mitm := testutil.StartAuthServer(t, testutil.SelfSigned(t, "127.0.0.1"), "u", "p")
	rh, err := parseRelayHost(mitm.Addr, "25")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{TLS: "required", Auth: &RelayAuth{Username: "u", Password: "p"},
		localName: "gateway.test", hosts: []relayHost{rh}, metrics: noMetrics{}}
	sess, err := r.Open(context.Background(), "")
	if err == nil {
		sess.Close()
	}
	if n := mitm.AuthAttempts.Load(); n != 0 {
		t.Fatalf("the interceptor received %d AUTH commands (%v)", n, mitm.Logins())
	}
	var de *queue.DeliveryError
	if !errors.As(err, &de) || !de.Temporary || de.Enhanced != "4.7.0" {
		t.Fatalf("Open: %v; want a temporary 4.7.0 delivery error", err)
	}
	if mitm.Handshakes.Load() == 0 {
		t.Fatal("no TLS handshake with the interceptor: the test proves nothing")
	}
}

// TestAuthPlaceholderUnset: a password from an environment variable that
// is not set is refused when the config is loaded (validate), naming the
// placeholder, instead of failing every login later; implicit TLS needs a
// level that never sends plaintext.
func TestAuthPlaceholderUnset(t *testing.T) {
	t.Setenv("CADDY_SMTP_TEST_SET", "secret")
	for _, tc := range []struct{ pass, wantErr string }{
		{"{env.CADDY_SMTP_TEST_UNSET}", "auth password {env.CADDY_SMTP_TEST_UNSET} is empty"},
		{"{env.CADDY_SMTP_TEST_SET}", ""},
	} {
		r := &Relay{Hosts: []string{"smarthost.test:587"}, TLS: "verify", Auth: &RelayAuth{Username: "u", Password: tc.pass}}
		err := r.Provision(caddy.Context{})
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.pass, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want %q", tc.pass, err, tc.wantErr)
		}
	}
	r := &Relay{Hosts: []string{"smarthost.test"}, TLS: "opportunistic", ImplicitTLS: true}
	if err := r.Provision(caddy.Context{}); err == nil || !strings.Contains(err.Error(), "implicit_tls needs tls required or verify") {
		t.Errorf("implicit with opportunistic: %v", err)
	}
	r = &Relay{Hosts: []string{"smarthost.test"}, TLS: "verify", ImplicitTLS: true}
	if err := r.Provision(caddy.Context{}); err != nil || r.hosts[0].addr != "smarthost.test:465" {
		t.Errorf("implicit: %v, host %+v, want port 465", err, r.hosts)
	}
}
