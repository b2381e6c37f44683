package interop

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRelayImplicitTLSToPostfix: a relay target with `tls implicit`
// delivers to a private Postfix in wrapper mode (smtpd_tls_wrappermode,
// TLS from the first byte as on port 465) whose certificate comes from a
// CA in ca_file; with a CA the certificate does not chain to, nothing is
// sent and the message waits.
func TestRelayImplicitTLSToPostfix(t *testing.T) {
	p := newPostfix(t, nil)
	ca := newCert(t, p.conf, "ca", nil, true, "Interop Test CA")
	other := newCert(t, p.conf, "other-ca", nil, true, "Another CA")
	kp := newCert(t, p.conf, "smtpd", ca, false, "127.0.0.1")
	vmail := p.virtualMailboxes("example.test", "bob")
	for k, v := range map[string]string{
		"smtpd_tls_wrappermode":    "yes",
		"smtpd_tls_security_level": "encrypt",
		"smtpd_tls_cert_file":      kp.cert,
		"smtpd_tls_key_file":       kp.key,
	} {
		p.settings[k] = v
	}
	p.start()
	mailbox := filepath.Join(vmail, "example.test", "bob")

	for _, tc := range []struct {
		name, caFile string
		delivered    bool
	}{
		{"trusted", ca.cert, true},
		{"untrusted", other.cert, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t)
			gwAddr := loopback(freePort(t))
			g.start(g.config(map[string]any{
				"hostname": "localhost",
				"servers":  map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": gwAddr}}}},
				"routes": []any{map[string]any{
					"domains": []string{"example.test"},
					"deliver": map[string]any{"target": "relay", "hosts": []string{p.addr()},
						"tls": "verify", "implicit_tls": true, "ca_file": tc.caFile},
				}},
			}, nil), gwAddr)
			c := dialSMTP(t, gwAddr, nil)
			c.cmd("EHLO client.sender.test", 250)
			c.cmd("MAIL FROM:<alice@sender.test>", 250)
			c.cmd("RCPT TO:<bob@example.test>", 250)
			subject := "implicit " + tc.name
			if code, text := c.data(interopMessage(subject, "implicit-"+tc.name+"@sender.test")); code != 250 {
				t.Fatalf("DATA: %s", text)
			}
			c.cmd("QUIT", 221)
			if !tc.delivered {
				e := g.waitLog("delivery attempt", 60*time.Second, func(e map[string]any) bool { return e["deferred"] == float64(1) })
				if s := strings.ToLower(fmt.Sprint(e)); !strings.Contains(s, "certificate") && !strings.Contains(s, "x509") {
					t.Errorf("the deferred attempt does not say why: %v", e)
				}
				return
			}
			e := g.waitLog("delivery attempt", 60*time.Second, func(e map[string]any) bool { return e["delivered"] == float64(1) })
			if e["tls"] != true || e["tls_verified"] != true {
				t.Errorf("delivery logged as %v; want tls and tls_verified", e)
			}
			files := waitMaildir(t, mailbox, 1, 30*time.Second)
			if len(files) != 1 {
				t.Fatalf("%d messages in bob's Maildir", len(files))
			}
		})
	}
}
