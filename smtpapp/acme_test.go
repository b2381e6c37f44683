package smtpapp_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int { return testutil.FreePort(t) }

// waitForPort waits until something accepts TCP connections on addr.
func waitForPort(t *testing.T, addr string) { testutil.WaitForPort(t, addr, 20*time.Second) }

func TestZeroTouchACMEWithPebble(t *testing.T) {
	p := testutil.StartPebble(t)
	e := newTestEnv(t)
	const host = "mail.pebble.test"
	cfg := e.config(map[string]any{
		"hostname": host,
		"servers": map[string]any{"mx": map[string]any{
			"listen":           []any{map[string]any{"address": "127.0.0.1:0"}},
			"certificate_wait": "60s",
		}},
	}, func(c map[string]any) {
		c["apps"].(map[string]any)["tls"] = map[string]any{
			"automation": map[string]any{"policies": []any{p.Policy(host)}},
		}
	})
	app := e.load(cfg)
	addr := addrsOf(app, "mx")[0]

	// Connect at once: the certificate is still being obtained, so the
	// handshake is held until Pebble has validated and issued it.
	d := dial(t, addr)
	_ = d.conn.SetDeadline(time.Now().Add(90 * time.Second))
	d.expect("220 " + host)
	d.cmd("EHLO client.example", "STARTTLS")
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(p.IssuingRoot(t)) {
		t.Fatal("no root in Pebble's answer")
	}
	st := d.startTLS(&tls.Config{ServerName: host, RootCAs: roots})
	if len(st.VerifiedChains) == 0 {
		t.Fatal("no verified chain to Pebble's root")
	}
	if err := st.PeerCertificates[0].VerifyHostname(host); err != nil {
		t.Fatal(err)
	}
	d.cmd("EHLO client.example", "250")
	if r := d.sendMail("a@sender.example", "acme@example.test", "Subject: acme\r\n\r\nissued"); r[:3] != "250" {
		t.Fatalf("DATA reply %q", r)
	}
}
