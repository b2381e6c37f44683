package smtpapp_test

import (
	"crypto/sha256"
	"crypto/tls"
	"path/filepath"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
)

// TestTLSACheck: the TLSA records published for the server's hostname are
// checked against the certificate it presents. A 3 1 1 record of the
// current key, without key reuse, sets caddy_smtp_tlsa_key_change_pending
// and logs a warning naming the expected renewal; a 2 1 1 record of the
// issuing CA besides it clears that; records that match nothing set
// caddy_smtp_tlsa_mismatch and log an error; key reuse clears the pending
// warning.
func TestTLSACheck(t *testing.T) {
	ns := testdns.Start(t)
	owner := "_25._tcp." + testHost
	for _, reuse := range []bool{false, true} {
		ns.Remove(owner)
		e := newTestEnv(t)
		logFile := filepath.Join(t.TempDir(), "log.json")
		app := e.load(e.config(map[string]any{
			"servers":                map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
			"reuse_certificate_keys": reuse,
			"tlsa_check":             map[string]any{"interval": "20ms", "resolvers": []string{ns.Addr()}},
		}, logTo(logFile, "INFO")))
		d := dial(t, addrsOf(app, "mx")[0])
		d.expect("220")
		d.cmd("EHLO client.example", "250")
		st := d.startTLS(&tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
		if len(st.PeerCertificates) < 2 {
			t.Fatalf("%d certificates in the chain, want leaf and intermediate", len(st.PeerCertificates))
		}
		leafKey := sha256.Sum256(st.PeerCertificates[0].RawSubjectPublicKeyInfo)
		caKey := sha256.Sum256(st.PeerCertificates[1].RawSubjectPublicKeyInfo)

		ns.AddTLSA(owner, 3, 1, 1, leafKey[:])
		if reuse {
			eventually(t, "a checked record", func() bool {
				l := readLog(t, logFile, "TLSA records match the certificate")
				return len(l) > 0 && l[0]["key_kept"] == true
			})
			if v := gauge(t, "caddy_smtp_tlsa_key_change_pending"); v != 0 {
				t.Errorf("key reuse on: key_change_pending %v, want 0", v)
			}
			continue
		}
		eventually(t, "the pending key change", func() bool { return gauge(t, "caddy_smtp_tlsa_key_change_pending") == 1 })
		warned := readLog(t, logFile, "the next certificate renewal will change the key that the published TLSA record pins")
		if len(warned) == 0 || warned[0]["level"] != "warn" || warned[0]["name"] != owner || warned[0]["renewal_expected"] == nil {
			t.Errorf("warning %v", warned)
		}
		ns.AddTLSA(owner, 2, 1, 1, caKey[:])
		eventually(t, "the CA record covers the renewal", func() bool { return gauge(t, "caddy_smtp_tlsa_key_change_pending") == 0 })
		if l := readLog(t, logFile, "TLSA records match the certificate"); len(l) == 0 || l[0]["ca_record"] != true {
			t.Errorf("match log %v", l)
		}

		ns.Remove(owner)
		ns.AddTLSA(owner, 3, 1, 1, make([]byte, 32))
		eventually(t, "the mismatch", func() bool { return gauge(t, "caddy_smtp_tlsa_mismatch") == 1 })
		if l := readLog(t, logFile, "published TLSA records do not match the certificate: senders that use DANE cannot deliver; publish the records of `caddy smtp tlsa`"); len(l) == 0 || l[0]["level"] != "error" {
			t.Errorf("mismatch log %v", l)
		}
	}
}
