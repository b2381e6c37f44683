package pgstorage_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	_ "github.com/caddy-smtp/caddy-smtp/modules/standard"
)

func TestMain(m *testing.M) {
	testpg.RunNode()
	os.Exit(m.Run())
}

// Two gateway processes that share the PostgreSQL storage and start at
// once get one certificate from one ACME order: one node obtains it under
// the storage lock, the other finds it in storage, and both serve it.
func TestFleetSharesOneCertificate(t *testing.T) {
	pebble := testutil.StartPebble(t)
	srv := testpg.Start(t)
	const host = "mx.fleet.test"
	dir := t.TempDir()
	var addrs []string
	for i := range 2 {
		addr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
		addrs = append(addrs, addr)
		cfg := map[string]any{
			"admin":   map[string]any{"disabled": true},
			"storage": map[string]any{"module": "postgres", "dsn": "{env.FLEET_PG_DSN}", "lock_expiry": "10s"},
			"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "INFO"}}},
			"apps": map[string]any{
				"tls": map[string]any{"automation": map[string]any{"policies": []any{pebble.Policy(host)}}},
				"smtp": map[string]any{
					"hostname": host,
					"queue":    map[string]any{"path": filepath.Join(dir, "spool"+strconv.Itoa(i))},
					"servers": map[string]any{"mx": map[string]any{
						"listen":           []any{map[string]any{"address": addr}},
						"certificate_wait": "90s",
					}},
				},
			},
		}
		raw, _ := json.Marshal(cfg)
		path := filepath.Join(dir, "node"+strconv.Itoa(i)+".json")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		testutil.StartProcess(t, filepath.Join(dir, "node"+strconv.Itoa(i)+".log"),
			[]string{testpg.NodeEnv + "=" + path, "FLEET_PG_DSN=" + srv.DSN()}, os.Args[0])
	}
	roots := x509.NewCertPool()
	for _, addr := range addrs {
		testutil.WaitForPort(t, addr, 60*time.Second)
	}
	if !roots.AppendCertsFromPEM(pebble.IssuingRoot(t)) {
		t.Fatal("no root in Pebble's answer")
	}
	var serials []string
	for _, addr := range addrs {
		cert := startTLS(t, addr, &tls.Config{ServerName: host, RootCAs: roots})
		serials = append(serials, cert.SerialNumber.String())
	}
	if serials[0] != serials[1] {
		t.Fatalf("the nodes serve different certificates (serials %s, %s)", serials[0], serials[1])
	}
	log, err := os.ReadFile(pebble.Log)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "Added order"); n != 1 {
		t.Fatalf("Pebble saw %d ACME orders, want 1", n)
	}
	var crts int
	srv.QueryRow(t, `SELECT count(*) FROM certmagic_data WHERE key LIKE 'certificates/%/`+host+`/`+host+`.crt'`, nil, &crts)
	if crts != 1 {
		t.Fatalf("%d certificates for %s in storage, want 1", crts, host)
	}
}

// startTLS greets an SMTP server, upgrades with STARTTLS and returns the
// verified leaf certificate.
func startTLS(t *testing.T, addr string, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(120 * time.Second))
	r := bufio.NewReader(c)
	expect := func(prefix string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: reading: %v", addr, err)
			}
			if !strings.HasPrefix(line, prefix[:3]) {
				t.Fatalf("%s: %q, want %q", addr, line, prefix)
			}
			if len(line) > 3 && line[3] == ' ' {
				return
			}
		}
	}
	expect("220")
	fmt.Fprintf(c, "EHLO client.test\r\n")
	expect("250")
	fmt.Fprintf(c, "STARTTLS\r\n")
	expect("220")
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(context.Background()); err != nil {
		t.Fatalf("%s: TLS handshake: %v", addr, err)
	}
	return tc.ConnectionState().PeerCertificates[0]
}
