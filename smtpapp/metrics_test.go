package smtpapp_test

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestMetricsAfterScriptedSession(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen":                 []any{map[string]any{"address": "127.0.0.1:0"}},
			"max_connections_per_ip": 1,
		}},
	}))
	addr := addrsOf(app, "mx")[0]

	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.startTLS(&tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
	d.cmd("EHLO client.example", "250")
	dial(t, addr).expect("421 4.7.0") // second connection from the same address
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<x@elsewhere.test>", "550 5.7.1")
	d.cmd("RCPT TO:<u@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: m\r\n\r\nbody\r\n.\r\n")
	d.expect("250")
	if r := d.sendMail("a@sender.test", "u@example.test", "Subject: m\r\n\r\nbare\nLF"); !strings.HasPrefix(r, "550 5.6.0") {
		t.Fatalf("bare LF: %q", r)
	}
	e.waitMail("example.test", "u", 1)
	eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })

	for name, c := range map[string]struct {
		got, want float64
	}{
		"connections":          {app.TestCounter("connections", "mx", "starttls"), 1},
		"refused per ip":       {app.TestCounter("connectionsRefused", "mx", "max_connections_per_ip"), 1},
		"tls handshakes":       {app.TestCounter("tlsHandshakes", "mx", "TLSv1.3"), 1},
		"relay denied":         {app.TestCounter("commandsRejected", "mx", "relay_denied"), 1},
		"accepted over TLS":    {app.TestCounter("messagesAccepted", "mx", "true"), 1},
		"accepted in plain":    {app.TestCounter("messagesAccepted", "mx", "false"), 0},
		"rejected bare LF":     {app.TestCounter("messagesRejected", "mx", "bare_newline"), 1},
		"delivered to maildir": {app.TestCounter("deliveries", "delivered", "local", "none"), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", name, c.got, c.want)
		}
	}
	if b := app.TestCounter("bytesReceived", "mx"); b < 100 {
		t.Errorf("received bytes %v", b)
	}

	// They are in Caddy's registry, which Caddy's /metrics serves.
	ctx := caddy.ActiveContext()
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, f := range families {
		found[f.GetName()] = true
	}
	for _, name := range []string{"caddy_smtp_messages_accepted_total", "caddy_smtp_queue_messages", "caddy_smtp_queue_oldest_message_age_seconds", "caddy_smtp_delivery_attempts_total"} {
		if !found[name] {
			t.Errorf("%s not in Caddy's metrics registry", name)
		}
	}
}
