package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Pebble is a running Pebble ACME server with pebble-challtestsrv as its
// DNS server, which answers 127.0.0.1 for every name: validation is real
// (no PEBBLE_VA_ALWAYS_VALID), against whatever listens on the challenge
// ports here.
type Pebble struct {
	DirURL   string // ACME directory
	CAPath   string // trust anchor of Pebble's own HTTPS endpoints (PEM)
	Mgmt     string // management address (issuing roots)
	HTTPPort int    // where Pebble's VA connects for HTTP-01
	TLSPort  int    // where Pebble's VA connects for TLS-ALPN-01
	Log      string // Pebble's output ("Added order ..." per new order)
}

// StartPebble starts Pebble and pebble-challtestsrv on free loopback
// ports; both are stopped when the test ends.
func StartPebble(t testing.TB) *Pebble {
	t.Helper()
	pebbleBin := RequireTool(t, "pebble")
	challBin := RequireTool(t, "pebble-challtestsrv")
	dir := t.TempDir()
	caPath, certPath, keyPath := writeHTTPSCert(t, dir)
	loopback := func() string { return "127.0.0.1:" + strconv.Itoa(FreePort(t)) }
	p := &Pebble{CAPath: caPath, HTTPPort: FreePort(t), TLSPort: FreePort(t), Mgmt: loopback()}
	acme, dns, challMgmt := loopback(), loopback(), loopback()
	p.DirURL = "https://" + acme + "/dir"
	raw, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":                  acme,
		"managementListenAddress":        p.Mgmt,
		"certificate":                    certPath,
		"privateKey":                     keyPath,
		"httpPort":                       p.HTTPPort,
		"tlsPort":                        p.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}})
	cfg := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	StartProcess(t, filepath.Join(dir, "challtestsrv.log"), nil, challBin,
		"-dnsserver", dns, "-management", challMgmt,
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
	WaitForPort(t, challMgmt, 30*time.Second)
	p.Log = filepath.Join(dir, "pebble.log")
	StartProcess(t, p.Log, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		pebbleBin, "-config", cfg, "-dnsserver", dns)
	WaitForPort(t, acme, 30*time.Second)
	WaitForPort(t, p.Mgmt, 30*time.Second)
	return p
}

// Policy is a tls app automation policy that gets certificates for names
// from Pebble, answering challenges on the ports Pebble connects to.
func (p *Pebble) Policy(names ...string) map[string]any {
	return map[string]any{
		"subjects": names,
		"issuers": []any{map[string]any{
			"module":                  "acme",
			"ca":                      p.DirURL,
			"trusted_roots_pem_files": []string{p.CAPath},
			"challenges": map[string]any{
				"http":     map[string]any{"alternate_port": p.HTTPPort},
				"tls-alpn": map[string]any{"alternate_port": p.TLSPort},
			},
		}},
	}
}

// IssuingRoot fetches the root Pebble issues certificates under (PEM;
// /roots/0 on its management endpoint, new on every start).
func (p *Pebble) IssuingRoot(t testing.TB) []byte {
	t.Helper()
	caPEM, err := os.ReadFile(p.CAPath)
	if err != nil {
		t.Fatal(err)
	}
	trust := x509.NewCertPool()
	trust.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: trust}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + p.Mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /roots/0: %s %v", resp.Status, err)
	}
	return body
}

// writeHTTPSCert creates a CA and a certificate for 127.0.0.1 and
// localhost signed by it, for Pebble's own HTTPS endpoints, and returns the
// paths of the CA certificate, the certificate and its key.
func writeHTTPSCert(t testing.TB, dir string) (caPath, certPath, keyPath string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "caddy-smtp test: Pebble HTTPS CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	caPath, certPath, keyPath = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, block := range map[string]*pem.Block{
		caPath:   {Type: "CERTIFICATE", Bytes: caDER},
		certPath: {Type: "CERTIFICATE", Bytes: leafDER},
		keyPath:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return
}
