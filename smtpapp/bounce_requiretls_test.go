package smtpapp_test

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/dsntest"
)

// TestREQUIRETLSBounce follows a bounce end to end: a message to
// example.test is refused by its next hop with 550, and the DSN goes back
// to sender.test through a second next hop. A DSN about a REQUIRETLS
// message travels with REQUIRETLS and carries the original's header only,
// even with RET=FULL (RFC 8689 section 5), so it is never handed to a
// return path without verified TLS; a bounce of an ordinary message is
// unchanged.
func TestREQUIRETLSBounce(t *testing.T) {
	for _, tc := range []struct {
		name       string
		requireTLS bool // the submission says REQUIRETLS
		returnTLS  bool // sender.test's next hop offers TLS and REQUIRETLS
		delivered  bool // the DSN reaches sender.test's next hop
	}{
		{"REQUIRETLS, return path with REQUIRETLS", true, true, true},
		{"REQUIRETLS, plaintext return path", true, false, false},
		{"plain message, plaintext return path", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			certs, _, caPEM := testCertificateWithCA(t, "localhost")
			caFile := filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			next := startReceiver(t, receiverOpts{tls: certs, requireTLS: true})
			next.rcptErr = func(string) error {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}
			back := receiverOpts{}
			if tc.returnTLS {
				back = receiverOpts{tls: certs, requireTLS: true}
			}
			ret := startReceiver(t, back)
			// Relay hosts by name, so that their certificate verifies
			// (REQUIRETLS needs that).
			relayTo := func(r *receiver) map[string]any {
				_, port, _ := net.SplitHostPort(r.addr)
				return map[string]any{"target": "relay", "hosts": []string{"localhost:" + port}, "ca_file": caFile}
			}
			app := e.load(e.config(map[string]any{
				"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
				"routes": []any{
					map[string]any{"domains": []string{"example.test"}, "deliver": relayTo(next)},
					map[string]any{"domains": []string{"sender.test"}, "deliver": relayTo(ret)},
				},
			}))

			d := dial(t, addrsOf(app, "mx")[0])
			d.expect("220")
			d.cmd("EHLO client.example", "250")
			d.startTLS(&tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
			d.cmd("EHLO client.example", "REQUIRETLS")
			mail := "MAIL FROM:<a@sender.test> RET=FULL"
			if tc.requireTLS {
				mail += " REQUIRETLS"
			}
			d.cmd(mail, "250")
			d.cmd("RCPT TO:<user@example.test>", "250")
			d.cmd("DATA", "354")
			d.raw("Subject: confidential\r\nMessage-ID: <rt@test>\r\n\r\nthe secret body\r\n.\r\n")
			d.expect("250")
			d.cmd("QUIT", "221")

			if !tc.delivered {
				// The DSN is tried and fails (5.7.10, the null sender gets
				// no DSN of its own): the queue empties, nothing arrives.
				eventually(t, "DSN tried and dropped", func() bool {
					return ret.conns.Load() > 0 && app.TestQueue().Len() == 0
				})
				if n := len(ret.messages()); n != 0 {
					t.Fatalf("%d messages sent to a return path without TLS; the DSN needs REQUIRETLS", n)
				}
				return
			}
			m := ret.waitMessages(1)[0]
			if m.from != "" || m.requireTLS != tc.requireTLS || m.tls != tc.returnTLS {
				t.Fatalf("DSN envelope: from %q, REQUIRETLS %v, TLS %v; want <>, %v, %v", m.from, m.requireTLS, m.tls, tc.requireTLS, tc.returnTLS)
			}
			p, err := dsntest.Parse(strings.NewReader(string(m.data)))
			if err != nil {
				t.Fatalf("parsing DSN: %v\n%s", err, m.data)
			}
			if rc := p.Report.Recipients[0]; rc.Final != "user@example.test" || rc.Status != "5.1.1" {
				t.Fatalf("DSN recipient %+v", rc)
			}
			if !strings.Contains(string(p.Original), "Message-ID: <rt@test>") {
				t.Errorf("DSN does not return the original header:\n%s", p.Original)
			}
			wantType := "message/rfc822"
			if tc.requireTLS {
				wantType = "text/rfc822-headers"
			}
			if body := strings.Contains(string(m.data), "the secret body"); p.OriginalType != wantType || body == tc.requireTLS {
				t.Errorf("returned %s (body included: %v), want %s", p.OriginalType, body, wantType)
			}
		})
	}
}
