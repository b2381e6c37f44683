package lists

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ kind, value, want string }{
		{KindIP, "192.0.2.7", "192.0.2.7"},
		{KindIP, " 192.0.2.0/24 ", "192.0.2.0/24"},
		{KindIP, "192.0.2.7/32", "192.0.2.7"},
		{KindIP, "::ffff:192.0.2.7", "192.0.2.7"},
		{KindIP, "::ffff:192.0.2.0/120", "192.0.2.0/24"},
		{KindIP, "2001:DB8::/32", "2001:db8::/32"},
		{KindIP, "2001:db8::1/128", "2001:db8::1"},
		{KindHelo, "Mail.Example.COM.", "mail.example.com"},
		{KindHelo, ".Example.com", ".example.com"},
		{KindHelo, "[192.0.2.7]", "[192.0.2.7]"},
		{KindHelo, "[IPv6:2001:DB8::7]", "[ipv6:2001:db8::7]"},
		{KindHelo, "host_1.example.com", "host_1.example.com"},
		{KindSender, "Alice@Example.COM", "alice@example.com"},
		{KindSender, "<>", "<>"},
		{KindSender, `"odd@local"@example.net`, `"odd@local"@example.net`},
		{KindSender, "a@[192.0.2.7]", "a@[192.0.2.7]"},
		{KindSenderDomain, "Example.com.", "example.com"},
		{KindSenderDomain, ".example.com", ".example.com"},
		{KindSenderDomain, "bücher.example", "bücher.example"},
		{KindRecipient, "Bob@Example.com", "bob@example.com"},
		{KindRecipient, ".example.com", ".example.com"},
		{KindRecipient, "example.com", "example.com"},
	} {
		e, err := Normalize(Entry{Kind: tc.kind, Value: tc.value})
		if err != nil || e.Value != tc.want {
			t.Errorf("%s %q: %q, %v; want %q", tc.kind, tc.value, e.Value, err, tc.want)
		}
	}
	for _, tc := range []struct{ kind, value, want string }{
		{"ipaddr", "192.0.2.7", "want one of ip, helo"},
		{KindIP, "", "empty value"},
		{KindIP, "192.0.2.0/33", "not an IP address or CIDR"},
		{KindIP, "192.0.2.7/24", "host bits set (the network is 192.0.2.0/24)"},
		{KindIP, "192.0.2", "not an IP address"},
		{KindIP, "fe80::1%eth0", "not an IP address"},
		{KindIP, "example.com", "not an IP address"},
		{KindHelo, "[192.0.2.7", "without ']'"},
		{KindHelo, "[2001:db8::7]", "not an IPv4 address literal"},
		{KindHelo, "exa mple.com", "character ' '"},
		{KindHelo, "a..example.com", "not a domain name"},
		{KindHelo, "-a.example.com", "not a domain name"},
		{KindSender, "alice", "want local@domain"},
		{KindSender, "@example.com", "want local@domain"},
		{KindSender, "a b@example.com", "space or control"},
		{KindSender, "alice@", "domain: not a domain name"},
		{KindSender, "alice@.example.com", "domain: not a domain name"},
		{KindSenderDomain, "a@example.com", "character '@'"},
		{KindSenderDomain, ".", "not a domain name"},
		{KindRecipient, "bob@exa_mple,com", "character ','"},
	} {
		_, err := Normalize(Entry{Kind: tc.kind, Value: tc.value})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: error %v, want one containing %q", tc.kind, tc.value, err, tc.want)
		}
	}
	if _, err := Normalize(Entry{Kind: KindIP, Value: "192.0.2.7", Comment: "two\nlines"}); err == nil || !strings.Contains(err.Error(), "comment") {
		t.Errorf("comment with a line break: %v", err)
	}
}
