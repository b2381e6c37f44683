package dnsbl

import (
	"net/netip"
	"testing"
)

// TestQueryName: RFC 5782 names, IPv4 by octets and IPv6 by nibbles.
func TestQueryName(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.99":       "99.2.0.192.zen.example",
		"2001:db8::1":      "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example",
		"2001:db8:1:2::ab": "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.zen.example",
	} {
		if got := QueryName(netip.MustParseAddr(ip), "zen.example"); got != want {
			t.Errorf("%s: %s, want %s", ip, got, want)
		}
	}
}
