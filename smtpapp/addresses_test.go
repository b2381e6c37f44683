package smtpapp_test

import "testing"

// TestAddressesGoSMTPWouldUnquote: go-smtp takes quoted local parts and
// hands them to the session unquoted, so a quoted "c>" would reach the next
// hop as RCPT TO:<c>@example.test> (command smuggling); such addresses are
// refused, as are addresses that are not UTF-8 and non-ASCII ones without
// SMTPUTF8 (found by FuzzSession).
func TestAddressesGoSMTPWouldUnquote(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
		}},
	}))
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "SMTPUTF8")
	d.cmd(`MAIL FROM:<"a b"@sender.test>`, "553 5.1.7")
	d.cmd(`MAIL FROM:<"a>"@sender.test>`, "553 5.1.7")
	d.cmd("MAIL FROM:<j\xf6rg@sender.test>", "553 5.1.7") // Latin-1, not UTF-8
	d.cmd("MAIL FROM:<jörg@sender.test>", "553 5.6.7")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	for _, rcpt := range []string{`"c>"@example.test`, `"a b"@example.test`, `".x"@example.test`, `"x..y"@example.test`, "\xffa@example.test"} {
		d.cmd("RCPT TO:<"+rcpt+">", "553 5.1.3")
	}
	d.cmd("RCPT TO:<jörg@example.test>", "553 5.6.7")
	d.cmd("RCPT TO:<o'brien+tag@example.test>", "250")
	d.cmd("RSET", "250")
	d.cmd("MAIL FROM:<jörg@sender.test> SMTPUTF8", "250")
	d.cmd("RCPT TO:<jörg@example.test>", "250")
}
