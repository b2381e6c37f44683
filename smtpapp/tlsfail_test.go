package smtpapp_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTLSHandshakeFailuresLogged: failed inbound handshakes, after
// STARTTLS and on an implicit TLS listener, are logged at info with the
// peer, the SNI and versions offered and a reason, and counted by reason:
// a TLS 1.1 client (protocol_version), bytes that are not TLS
// (no_client_hello after STARTTLS, not_tls on the implicit listener) and a
// client that does not trust our certificate (client_rejected_certificate).
func TestTLSHandshakeFailuresLogged(t *testing.T) {
	e := newTestEnv(t)
	logFile := filepath.Join(e.dir, "caddy.log")
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{
				map[string]any{"address": "127.0.0.1:0"},
				map[string]any{"address": "127.0.0.2:0", "tls": "implicit"},
			},
			"tls_handshake_timeout": "2s",
		}},
	}, logTo(logFile, "INFO")))
	addrs := addrsOf(app, "mx")
	starttls, implicit := addrs[0], addrs[1]
	// The certificate must be ready before the failures are provoked.
	d := dialTLS(t, implicit, &tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
	d.expect("220")
	d.cmd("QUIT", "221")

	old := &tls.Config{ServerName: testHost, RootCAs: e.rootPool(), MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10}
	untrusting := &tls.Config{ServerName: testHost, RootCAs: x509.NewCertPool()}
	afterSTARTTLS := func(handshake func(c net.Conn)) {
		t.Helper()
		c, err := net.Dial("tcp", starttls)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d := newDialog(t, c)
		d.expect("220")
		d.cmd("EHLO client.example", "250")
		d.cmd("STARTTLS", "220")
		handshake(c)
	}
	implicitly := func(handshake func(c net.Conn)) {
		t.Helper()
		c, err := net.Dial("tcp", implicit)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		handshake(c)
	}
	tlsClient := func(cfg *tls.Config) func(net.Conn) {
		return func(c net.Conn) {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			tc := tls.Client(c, cfg)
			if err := tc.Handshake(); err == nil {
				t.Errorf("handshake with %+v succeeded", cfg)
			}
		}
	}
	garbage := func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "EHLO not.tls.example\r\nQUIT\r\n")
		_, _ = io.Copy(io.Discard, c) // until the server gives up on us
	}
	afterSTARTTLS(tlsClient(old))
	afterSTARTTLS(garbage)
	implicitly(tlsClient(old))
	implicitly(garbage)
	implicitly(tlsClient(untrusting))

	want := map[string]float64{"protocol_version": 2, "not_tls": 1, "client_rejected_certificate": 1}
	eventually(t, "the failures counted", func() bool {
		for reason, n := range want {
			if app.TestCounter("tlsHandshakeFailures", "mx", reason) != n {
				return false
			}
		}
		return true
	})
	// After STARTTLS, garbage may end in go-smtp's 550 reply (no hello)
	// or in nothing at all when the client has gone; at most one.
	if n := app.TestCounter("tlsHandshakeFailures", "mx", "no_client_hello"); n > 1 {
		t.Errorf("no_client_hello counted %v times", n)
	}
	var lines []logEntry
	eventually(t, "the failures logged", func() bool {
		lines = readLog(t, logFile, "TLS handshake failed")
		return len(lines) >= 4
	})
	seen := map[string]bool{}
	for _, l := range lines {
		if l["level"] != "info" || l["remote_ip"] != "127.0.0.1" && !strings.HasPrefix(l["remote_ip"].(string), "127.") {
			t.Errorf("log line %v", l)
		}
		seen[l["tls"].(string)+" "+l["reason"].(string)] = true
		if l["reason"] == "protocol_version" {
			if l["sni"] != testHost || !strings.Contains(strings.Join(toStrings(l["offered_versions"]), ","), "TLSv1.1") {
				t.Errorf("a TLS 1.1 client's line lacks its SNI or versions: %v", l)
			}
		}
	}
	for _, k := range []string{"starttls protocol_version", "implicit protocol_version", "implicit not_tls", "implicit client_rejected_certificate"} {
		if !seen[k] {
			t.Errorf("no log line for %s; lines: %v", k, lines)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
