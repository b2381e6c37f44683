package lists

import (
	"net"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// TestIndexLookup: within a kind, the most specific entry wins, and the
// block list wins a tie.
func TestIndexLookup(t *testing.T) {
	entry := func(kind, value string) Entry {
		e, err := Normalize(Entry{Kind: kind, Value: value})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	x := newIndex(Lists{
		Allow: []Entry{
			entry(KindIP, "192.0.2.7"), entry(KindIP, "10.0.0.0/8"), entry(KindIP, "2001:db8:1::/48"),
			entry(KindHelo, "good.example.org"), entry(KindSender, "friend@spam.example"), entry(KindSender, "<>"),
			entry(KindSenderDomain, ".ok.spam.example"), entry(KindRecipient, "postmaster@example.com"),
			entry(KindIP, "198.51.100.1"),
		},
		Block: []Entry{
			entry(KindIP, "192.0.2.0/24"), entry(KindIP, "10.1.0.0/16"), entry(KindIP, "2001:db8::/32"),
			entry(KindHelo, ".example.org"), entry(KindHelo, "[IPv6:2001:db8::7]"), entry(KindSender, "bad@example.com"), entry(KindSenderDomain, "spam.example"),
			entry(KindSenderDomain, ".spam.example"), entry(KindRecipient, "example.com"), entry(KindRecipient, ".sub.example.net"),
			entry(KindIP, "198.51.100.1"),
		},
	})
	for _, tc := range []struct {
		kind string
		in   smtpapp.CheckInput
		want string // "", allow or block
	}{
		{KindIP, smtpapp.CheckInput{ClientIP: net.ParseIP("192.0.2.7")}, Allow},
		{KindIP, smtpapp.CheckInput{ClientIP: net.ParseIP("::ffff:192.0.2.7")}, Allow},
		{KindIP, smtpapp.CheckInput{ClientIP: net.ParseIP("192.0.2.8")}, Block},
		{KindIP, smtpapp.CheckInput{ClientIP: net.ParseIP("10.2.3.4")}, Allow},
		{KindIP, smtpapp.CheckInput{ClientIP: net.ParseIP("10.1.3.4")}, Block},
		{KindIP, smtpapp.CheckInput{ClientIP: net.ParseIP("2001:db8:1::5")}, Allow},
		{KindIP, smtpapp.CheckInput{ClientIP: net.ParseIP("2001:db8:2::5")}, Block},
		{KindIP, smtpapp.CheckInput{ClientIP: net.ParseIP("198.51.100.1")}, Block}, // in both lists
		{KindIP, smtpapp.CheckInput{ClientIP: net.ParseIP("203.0.113.1")}, ""},
		{KindIP, smtpapp.CheckInput{}, ""},
		{KindHelo, smtpapp.CheckInput{Helo: "Good.Example.org."}, Allow},
		{KindHelo, smtpapp.CheckInput{Helo: "x.example.org"}, Block},
		{KindHelo, smtpapp.CheckInput{Helo: "example.org"}, ""},
		{KindHelo, smtpapp.CheckInput{Helo: "[IPv6:2001:DB8:0::7]"}, Block},
		{KindHelo, smtpapp.CheckInput{Helo: "[192.0.2.8]"}, ""},
		{KindSender, smtpapp.CheckInput{Sender: "Bad@Example.com"}, Block},
		{KindSender, smtpapp.CheckInput{Sender: "friend@spam.example"}, Allow},
		{KindSender, smtpapp.CheckInput{Sender: ""}, Allow},
		{KindSender, smtpapp.CheckInput{Sender: "other@example.com"}, ""},
		{KindSenderDomain, smtpapp.CheckInput{Sender: "a@spam.example"}, Block},
		{KindSenderDomain, smtpapp.CheckInput{Sender: "a@x.spam.example"}, Block},
		{KindSenderDomain, smtpapp.CheckInput{Sender: "a@x.ok.spam.example"}, Allow},
		{KindSenderDomain, smtpapp.CheckInput{Sender: "a@ok.spam.example"}, Block},
		{KindSenderDomain, smtpapp.CheckInput{Sender: "a@notspam.example"}, ""},
		{KindSenderDomain, smtpapp.CheckInput{Sender: ""}, ""},
		{KindRecipient, smtpapp.CheckInput{Recipient: "Postmaster@example.com", RecipientDomain: "example.com"}, Allow},
		{KindRecipient, smtpapp.CheckInput{Recipient: "u@example.com", RecipientDomain: "example.com"}, Block},
		{KindRecipient, smtpapp.CheckInput{Recipient: "u@a.sub.example.net", RecipientDomain: "a.sub.example.net"}, Block},
		{KindRecipient, smtpapp.CheckInput{Recipient: "u@sub.example.net", RecipientDomain: "sub.example.net"}, ""},
	} {
		h, ok := x.lookup(tc.kind, &tc.in)
		if got := map[bool]string{true: h.list}[ok]; got != tc.want {
			t.Errorf("%s %+v: %q (entry %+v), want %q", tc.kind, tc.in, got, h.entry, tc.want)
		}
	}
}
