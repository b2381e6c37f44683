package smtpapp_test

import (
	"path/filepath"
	"testing"
)

// TestMatchRoutes: a route without domains (match only) picks the target
// for mail accepted otherwise but never opens relaying; routes are tried
// in order, so a matching route wins over the domain shorthand after it.
func TestMatchRoutes(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen":         []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"relay_networks": []string{"192.0.2.0/24"},
		}},
		"routes": []any{
			map[string]any{
				"match":   map[string]any{"sender_domain": []string{"sender.test"}},
				"deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "by-sender", "{local}"), "create_mailboxes": true},
			},
			map[string]any{
				"domains": []string{"example.test"},
				"deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true},
			},
		},
	}))
	addr := addrsOf(app, "mx")[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	// The sender matches the first route, but it limits no recipients:
	// an anonymous client still may not relay.
	d.cmd("RCPT TO:<x@elsewhere.test>", "550 5.7.1")
	d.cmd("RCPT TO:<u@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: m\r\n\r\nbody\r\n.\r\n")
	d.expect("250")
	// Accepted for example.test, delivered by the first matching route.
	e.waitMail("by-sender", "u", 1)

	d.cmd("MAIL FROM:<a@other.test>", "250")
	d.cmd("RCPT TO:<v@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: m\r\n\r\nbody\r\n.\r\n")
	d.expect("250")
	e.waitMail("example.test", "v", 1)
}
