package cmdsmtp

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	_ "github.com/caddy-smtp/caddy-smtp/modules/mtasts"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpdns"
)

// TestDNSRecordsCommand: `caddy smtp dns-records` against a running Caddy
// with an smtp server whose key is kept (reuse_certificate_keys) and an
// mta_sts handler: MX for the server, the SPF suggestion, the _mta-sts
// TXT record with the handler's policy id, TLS-RPT, and the TLSA 3 1 1
// record of the key the server presents in its handshake.
func TestDNSRecordsCommand(t *testing.T) {
	dir := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	const host = "mx.example.internal"
	cfg, _ := json.Marshal(map[string]any{
		"admin":   map[string]any{"listen": admin, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": testutil.StorageDir(t)},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"smtp": map[string]any{
				"hostname":               host,
				"reuse_certificate_keys": true,
				"queue":                  map[string]any{"path": filepath.Join(dir, "queue")},
				"servers":                map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": smtpAddr}}}},
			},
			"http": map[string]any{"servers": map[string]any{"sts": map[string]any{
				"listen":          []string{httpAddr},
				"automatic_https": map[string]any{"disable": true},
				"routes":          []any{map[string]any{"handle": []any{map[string]any{"handler": "mta_sts", "mode": "testing"}}}},
			}}},
		},
	})
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	// The key the server presents.
	c, err := smtp.DialStartTLS(smtpAddr, &tls.Config{ServerName: host, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(); err != nil { // the handshake is done by now
		t.Fatal(err)
	}
	cs, ok := c.TLSConnectionState()
	c.Close()
	if !ok || len(cs.PeerCertificates) == 0 {
		t.Fatal("no TLS")
	}
	sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)

	var out string
	testutil.Eventually(t, 20*time.Second, "the TLSA record", func() bool {
		out, err = runSub(t, dnsRecordsCommand(), admin, "Example.COM")
		return err == nil && strings.Contains(out, "TLSA 3 1 1")
	})
	for _, want := range []string{
		"example.com. MX 10 " + host + ". ;",
		`example.com. TXT "v=spf1 mx -all" ;`,
		`_mta-sts.example.com. TXT "v=STSv1; id=`,
		"MTA-STS policy mode testing for mx " + host,
		`_smtp._tls.example.com. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.com" ;`,
		"_25._tcp." + host + ". TLSA 3 1 1 " + hex.EncodeToString(sum[:]) + " ;",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if _, err := runSub(t, dnsRecordsCommand(), admin, "nodot"); err == nil || !strings.Contains(err.Error(), "mail domain") {
		t.Errorf("a name that is no domain: %v", err)
	}
	js, err := runSub(t, dnsRecordsCommand(), admin, "example.com", "--json")
	var parsed dnsRecords
	if err != nil || json.Unmarshal([]byte(js), &parsed) != nil || len(parsed.Records) != 5 {
		t.Errorf("--json: %v\n%s", err, js)
	}
}
