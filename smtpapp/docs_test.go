package smtpapp_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocumentedReplies: the replies that the README and the examples'
// READMEs quote are the replies the server sends. Each case names the
// document, the quote (whitespace as in running text) and a session that
// must get it.
func TestDocumentedReplies(t *testing.T) {
	e := newTestEnv(t)
	addrs := e.start(authServer(t, map[string]any{"require_tls": true}))
	space := regexp.MustCompile(`\s+`)
	doc := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", name))
		if err != nil {
			t.Fatal(err)
		}
		return space.ReplaceAllString(string(b), " ")
	}
	plain := func() *dialog {
		d := dial(t, addrs[0])
		d.expect("220")
		d.cmd("EHLO client.example", "250")
		return d
	}
	overTLS := func() *dialog {
		d, _ := e.tlsSession(t, addrs[0])
		return d
	}
	cases := []struct {
		doc, quote string
		reply      string        // what the reply starts with; default: the quote
		session    func() string // returns the reply
	}{
		{"examples/quickstart/README.md", "550 5.7.1 Relaying denied", "", func() string {
			d := overTLS()
			d.cmd("MAIL FROM:<a@sender.test>", "250")
			return d.cmd("RCPT TO:<x@elsewhere.test>")
		}},
		{"examples/smarthost/README.md", "550 5.7.1 Relaying denied", "", func() string {
			d := overTLS()
			d.cmd("MAIL FROM:<a@sender.test>", "250")
			return d.cmd("RCPT TO:<someone@example.org>")
		}},
		{"examples/submission/README.md", "530 5.7.0 Must issue a STARTTLS command first", "", func() string {
			return plain().cmd("MAIL FROM:<a@sender.test>")
		}},
		{"examples/submission/README.md", "553 5.7.1 Sender address not owned by the authenticated user", "", func() string {
			d := overTLS()
			d.cmd("AUTH PLAIN "+plainAuth("alice@example.test", "s3cret"), "235")
			return d.cmd("MAIL FROM:<mallory@example.test>")
		}},
		{"examples/submission/README.md", "235 2.7.0 Authentication successful", "", func() string {
			return overTLS().cmd("AUTH PLAIN " + plainAuth("alice@example.test", "s3cret"))
		}},
		{"examples/smarthost/README.md", "250 2.0.0 OK queued as", "", func() string {
			return overTLS().sendMail("a@sender.test", "u@example.test", "Subject: docs\r\n\r\nx")
		}},
		{"README.md", "(`523 5.7.10` before)", "523 5.7.10", func() string {
			d := dial(t, addrs[0])
			d.expect("220")
			d.cmd("EHLO client.example", "250")
			return d.cmd("AUTH PLAIN " + plainAuth("alice@example.test", "s3cret"))
		}},
		// Source routes are stripped (RFC 5321 4.1.1.3): the address
		// after them is judged like any other.
		{"README.md", "source routes (`<@a:b@c>`) are ignored", "250 2.1.5", func() string {
			d := overTLS()
			d.cmd("MAIL FROM:<a@sender.test>", "250")
			if r := d.cmd("RCPT TO:<@relay.example:x@elsewhere.test>"); !strings.HasPrefix(r, "550 5.7.1 Relaying denied") {
				t.Errorf("a source route to a foreign domain: %q, want relaying denied", r)
			}
			return d.cmd("RCPT TO:<@relay.example:u@example.test>")
		}},
	}
	for _, c := range cases {
		if !strings.Contains(doc(c.doc), c.quote) {
			t.Errorf("%s does not say %q", c.doc, c.quote)
			continue
		}
		want := c.reply
		if want == "" {
			want = c.quote
		}
		if got := c.session(); !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, but the server says %q", c.doc, c.quote, got)
		}
	}
}
