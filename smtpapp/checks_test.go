package smtpapp_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
)

// TestRecipientListCheck: a route's recipients check takes the listed
// addresses (any case, with +detail), catch-all domains and the entries of
// its file, re-read when the file changes; every other recipient of the
// route gets 550 5.1.1 at RCPT, so no message (and no bounce) is ever made
// for it.
func TestRecipientListCheck(t *testing.T) {
	e := newTestEnv(t)
	list := filepath.Join(e.dir, "recipients.txt")
	if err := os.WriteFile(list, []byte("# users\nbob@example.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
		}},
		"routes": []any{map[string]any{
			"domains": []string{"example.test", "catchall.test"},
			"checks": []any{map[string]any{"check": "recipients",
				"addresses": []string{"alice@example.test", "@catchall.test"}, "file": list, "reload_interval": 1}},
			"deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true},
		}},
	}))
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<alice@example.test>", "250")
	d.cmd("RCPT TO:<ALICE+news@Example.Test>", "250")
	d.cmd("RCPT TO:<nobody@example.test>", "550 5.1.1")
	d.cmd("RCPT TO:<anyone@catchall.test>", "250")
	d.cmd("RCPT TO:<bob@example.test>", "250")
	d.cmd("RCPT TO:<carol@example.test>", "550 5.1.1")
	d.cmd("RSET", "250")

	if err := os.WriteFile(list, []byte("# users\nbob@example.test\ncarol@example.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<carol@example.test>", "250")
	d.cmd("RCPT TO:<nobody@example.test>", "550 5.1.1")
	d.cmd("DATA", "354")
	d.raw("Subject: hi\r\n\r\nhello\r\n.\r\n")
	d.expect("250 2.0.0")
	e.waitMail("example.test", "carol", 1)
	if _, err := os.Stat(filepath.Join(e.mail, "example.test", "nobody")); !os.IsNotExist(err) {
		t.Errorf("a mailbox was made for the unknown recipient (stat: %v)", err)
	}
}

// TestMaildirRefusesUnknownMailbox: with one Maildir per user and no
// create_mailboxes, a recipient without a Maildir directory is refused at
// RCPT with 550 5.1.1 and no directory is made for it; one with a
// directory gets its mail.
func TestMaildirRefusesUnknownMailbox(t *testing.T) {
	e := newTestEnv(t)
	if err := os.MkdirAll(filepath.Join(e.mail, "example.test", "known"), 0o700); err != nil {
		t.Fatal(err)
	}
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
		}},
		"routes": []any{map[string]any{
			"domains": []string{"example.test"},
			"deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}")},
		}},
	}))
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<invented@example.test>", "550 5.1.1")
	d.cmd("RCPT TO:<known@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: hi\r\n\r\nhello\r\n.\r\n")
	d.expect("250 2.0.0")
	e.waitMail("example.test", "known", 1)
	if _, err := os.Stat(filepath.Join(e.mail, "example.test", "invented")); !os.IsNotExist(err) {
		t.Errorf("a mailbox was made for the unknown recipient (stat: %v)", err)
	}
}

// TestDNSBLCheck: a server's dnsbl check asks each zone about the client
// (served by a loopback DNS server) and refuses with 554 5.7.1 naming the
// zone when the weights reach the threshold; an allow list takes weight
// away; a zone's error code does not list; answers are cached; clients in
// relay_networks are not checked.
func TestDNSBLCheck(t *testing.T) {
	dns := testdns.Start(t)
	dns.AddA("1.0.0.127.bl.test", "127.0.0.2") // listed
	dns.AddA("3.0.0.127.bl.test", "127.0.0.2") // listed, and allowed below
	dns.AddA("3.0.0.127.wl.test", "127.0.0.2")
	dns.AddA("4.0.0.127.bl.test", "127.255.255.254") // "query refused": an error, not a listing
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen":         []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"relay_networks": []string{"127.0.0.5"},
			"checks": []any{map[string]any{"check": "dnsbl", "threshold": 5, "resolvers": []string{dns.Addr()},
				"zones": []any{
					map[string]any{"zone": "bl.test", "weight": 5},
					map[string]any{"zone": "wl.test", "weight": -10},
				}}},
		}},
	}))
	addr := addrsOf(app, "mx")[0]
	rcpt := func(from, want string) string {
		d := dialFrom(t, from, addr)
		d.expect("220")
		d.cmd("EHLO client.example", "250")
		d.cmd("MAIL FROM:<a@sender.test>", "250")
		got := d.cmd("RCPT TO:<u@example.test>", want)
		d.cmd("QUIT", "221")
		return got
	}
	if got := rcpt("127.0.0.1", "554 5.7.1"); !strings.Contains(got, "[127.0.0.1] blocked using bl.test") {
		t.Errorf("listed client refused with %q, want the zone named", got)
	}
	rcpt("127.0.0.1", "554 5.7.1")
	if n := dns.Queries("1.0.0.127.bl.test", mdns.TypeA); n != 1 {
		t.Errorf("bl.test asked %d times about 127.0.0.1, want 1 (cached)", n)
	}
	rcpt("127.0.0.2", "250")
	rcpt("127.0.0.3", "250")
	rcpt("127.0.0.4", "250")
	rcpt("127.0.0.5", "250")
	if n := dns.Queries("5.0.0.127.bl.test", mdns.TypeA); n != 0 {
		t.Errorf("a relay_networks client was looked up %d times", n)
	}
}

// TestSPFCheck: the RFC 7208 results against records on a loopback DNS
// server, each with its default action (and permerror set to reject):
// pass, neutral, none and softfail are taken, fail gets 550 5.7.23,
// temperror 451 4.4.3, permerror 550 5.7.24; the null sender is checked
// by its HELO name.
func TestSPFCheck(t *testing.T) {
	dns := testdns.Start(t)
	dns.AddTXT("pass.test", "v=spf1 ip4:127.0.0.1 -all")
	dns.AddTXT("soft.test", "v=spf1 ip4:192.0.2.1 ~all")
	dns.AddTXT("neutral.test", "v=spf1 ?all")
	dns.AddTXT("other.test", "v=some other record")
	dns.SetRcode("temp.test", mdns.TypeTXT, mdns.RcodeServerFailure)
	dns.AddTXT("perm.test", "v=spf1 ip4:127.0.0.1 -all")
	dns.AddTXT("perm.test", "v=spf1 -all") // two SPF records: permerror
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"checks": []any{map[string]any{"check": "spf", "permerror": "reject", "resolvers": []string{dns.Addr()}}},
		}},
	}))
	addr := addrsOf(app, "mx")[0]
	for _, tc := range []struct{ from, helo, sender, want string }{
		{"127.0.0.1", "client.example", "a@pass.test", "250"},
		{"127.0.0.2", "client.example", "a@pass.test", "550 5.7.23"},
		{"127.0.0.1", "client.example", "a@soft.test", "250"},
		{"127.0.0.1", "client.example", "a@neutral.test", "250"},
		{"127.0.0.1", "client.example", "a@other.test", "250"},
		{"127.0.0.1", "client.example", "a@temp.test", "451 4.4.3"},
		{"127.0.0.1", "client.example", "a@perm.test", "550 5.7.24"},
		{"127.0.0.1", "pass.test", "", "250"},
		{"127.0.0.2", "pass.test", "", "550 5.7.23"},
	} {
		d := dialFrom(t, tc.from, addr)
		d.expect("220")
		d.cmd("EHLO "+tc.helo, "250")
		d.cmd("MAIL FROM:<"+tc.sender+">", "250")
		if got := d.cmd("RCPT TO:<u@example.test>", tc.want); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s from %s (HELO %s): %q, want %s", tc.sender, tc.from, tc.helo, got, tc.want)
		}
		d.cmd("QUIT", "221")
	}
}

// TestGreetingDelayRefusesEarlyTalkers: with greeting_delay, a client that
// sends a command before the greeting is refused with 554 5.5.1 and the
// connection closed; one that waits gets the greeting and is served.
func TestGreetingDelayRefusesEarlyTalkers(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"greeting_delay": "2s"})[0]

	early := dial(t, addr)
	early.raw("EHLO impatient.example\r\n")
	early.expect("554 5.5.1", "talked before the greeting")
	assertClosed(t, early)

	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO patient.example", "250")
	if r := d.sendMail("a@sender.test", "u@example.test", "Subject: waited\r\n\r\nok"); !strings.HasPrefix(r, "250") {
		t.Fatalf("the patient client's message: %q", r)
	}
}
