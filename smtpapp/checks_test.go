package smtpapp_test

import (
	"os"
	"path/filepath"
	"testing"
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
