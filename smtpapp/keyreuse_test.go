package smtpapp_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// TestKeyReuseAcrossRealRenewal lets CertMagic really renew the server's
// certificate and compares the keys before and after. The certificate
// comes from Caddy's internal CA with a six-minute lifetime and is renewed
// once 98% of it is left, about 7 seconds after it was issued. With reuse_certificate_keys the renewed
// certificate has the key of the first, so a published TLSA 3 1 1 record
// stays valid; without it (the control) the key changes.
func TestKeyReuseAcrossRealRenewal(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		e := newTestEnv(t)
		e.storage = testutil.StorageDir(t) // a certificate of its own, not the package's shared one
		// A name per run: Caddy's certificate cache outlives a config.
		host := fmt.Sprintf("renew-%v.example.internal", reuse)
		app := e.load(e.config(map[string]any{
			"hostname": host,
			"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}},
				"connection_rate_per_ip": -1}}, // the test polls with handshakes
			"reuse_certificate_keys": reuse,
		}, func(c map[string]any) {
			c["apps"].(map[string]any)["tls"] = map[string]any{"automation": map[string]any{
				"renew_interval": "500ms",
				"policies": []any{map[string]any{
					"issuers":              []any{map[string]any{"module": "internal", "lifetime": "6m"}},
					"renewal_window_ratio": 0.98,
				}},
			}}
		}))
		addr := addrsOf(app, "mx")[0]
		leaf := func() *x509.Certificate {
			d := dial(t, addr)
			d.expect("220")
			d.cmd("EHLO client.example", "250")
			st := d.startTLS(&tls.Config{ServerName: host, RootCAs: e.rootPool()})
			d.conn.Close()
			return st.PeerCertificates[0]
		}
		first := leaf()
		var renewed *x509.Certificate
		testutil.Eventually(t, 60*time.Second, "a renewed certificate", func() bool {
			renewed = leaf()
			return renewed.SerialNumber.Cmp(first.SerialNumber) != 0
		})
		same := bytes.Equal(first.RawSubjectPublicKeyInfo, renewed.RawSubjectPublicKeyInfo)
		if same != reuse {
			t.Errorf("reuse_certificate_keys %v: the renewed certificate has the same key: %v", reuse, same)
		}
	}
}
