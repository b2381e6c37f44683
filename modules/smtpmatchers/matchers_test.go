package smtpmatchers

import (
	"net"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddyserver/caddy/v2"
)

func TestMatchers(t *testing.T) {
	in := smtpapp.MatchInput{
		Sender: "Alice@Corp.Example", Recipient: "bob@example.com", RecipientDomain: "example.com",
		ClientIP: net.ParseIP("192.0.2.7"), AuthUser: "alice",
	}
	null := in
	null.Sender, null.ClientIP, null.AuthUser = "", nil, ""
	for _, tc := range []struct {
		name string
		m    smtpapp.RouteMatcher
		in   smtpapp.MatchInput
		want bool
	}{
		{"recipient domain", RecipientDomain{"example.com"}, in, true},
		{"recipient subdomain pattern", RecipientDomain{"*.example.com"}, in, false},
		{"sender, case", Sender{"alice@corp.example"}, in, true},
		{"sender other", Sender{"carol@corp.example"}, in, false},
		{"null sender", Sender{"<>"}, null, true},
		{"null sender is not <> for others", Sender{"<>"}, in, false},
		{"sender domain", SenderDomain{"corp.example"}, in, true},
		{"sender subdomain", SenderDomain{"*.example"}, in, true},
		{"null sender has no domain", SenderDomain{"corp.example"}, null, false},
		{"remote ip in cidr", remoteIP(t, "192.0.2.0/24"), in, true},
		{"remote ip single", remoteIP(t, "192.0.2.8"), in, false},
		{"no client ip", remoteIP(t, "0.0.0.0/0"), null, false},
		{"authenticated", Authenticated(true), in, true},
		{"not authenticated", Authenticated(false), in, false},
		{"not authenticated, anonymous", Authenticated(false), null, true},
	} {
		if got := tc.m.MatchRoute(tc.in); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if !(RecipientDomain{}).LimitsRecipients() {
		t.Error("recipient_domain must limit recipients (relay control)")
	}
	for _, m := range []smtpapp.RouteMatcher{Sender{"a@b"}, SenderDomain{"b"}, remoteIP(t, "::1"), Authenticated(true)} {
		if _, ok := m.(smtpapp.RecipientLimiter); ok {
			t.Errorf("%T limits recipients: a route with it alone would open relaying", m)
		}
	}
}

// remoteIP is a provisioned remote_ip matcher.
func remoteIP(t *testing.T, ranges ...string) *RemoteIP {
	t.Helper()
	m := &RemoteIP{Ranges: ranges}
	if err := m.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	return m
}
