package smtpapp

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
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// requireTool returns the path of an external program. Locally a missing
// program skips the test; under CI=true it fails it, so that CI never counts
// a skipped test as passing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(string(trimNL(gopath)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed; .ci/run must install it", name)
	}
	t.Skipf("%s is not installed (install it to run this test; CI does)", name)
	return ""
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// freePort returns a loopback TCP port that was free a moment ago, for
// programs that cannot report the port they bound.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProcess runs a program until the test ends; it is stopped by its
// PID, also when the test fails.
func startProcess(t *testing.T, logName string, env []string, name string, args ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), logName))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("%s output:\n%s", logName, out)
		}
	})
}

// waitForPort waits until something accepts TCP connections on addr.
func waitForPort(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s: %v", addr, err)
		}
		tick := time.NewTimer(50 * time.Millisecond)
		<-tick.C
	}
}

// writeTestCA creates a CA and a certificate for 127.0.0.1 and localhost
// signed by it, for Pebble's own HTTPS endpoints. It returns the paths of
// the CA certificate, the leaf certificate and the leaf key.
func writeTestCA(t *testing.T, dir string) (caPath, certPath, keyPath string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "caddy-smtp test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
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
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
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

// pebble is a running Pebble ACME server with pebble-challtestsrv as its
// DNS server: validation is real (no PEBBLE_VA_ALWAYS_VALID).
type pebble struct {
	dirURL   string // ACME directory
	caPath   string // trust anchor of Pebble's HTTPS endpoints
	mgmt     string // management address (issuing roots)
	httpPort int    // where Pebble's VA connects for HTTP-01
	tlsPort  int    // where Pebble's VA connects for TLS-ALPN-01
}

func startPebble(t *testing.T) *pebble {
	t.Helper()
	pebbleBin := requireTool(t, "pebble")
	challBin := requireTool(t, "pebble-challtestsrv")
	dir := t.TempDir()
	caPath, certPath, keyPath := writeTestCA(t, dir)
	p := &pebble{caPath: caPath, httpPort: freePort(t), tlsPort: freePort(t)}
	acmeAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p.mgmt = "127.0.0.1:" + strconv.Itoa(freePort(t))
	dnsAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	challMgmt := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p.dirURL = "https://" + acmeAddr + "/dir"

	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  acmeAddr,
		"managementListenAddress":        p.mgmt,
		"certificate":                    certPath,
		"privateKey":                     keyPath,
		"httpPort":                       p.httpPort,
		"tlsPort":                        p.tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}}
	raw, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// Every name resolves to 127.0.0.1, where Caddy answers the challenges.
	startProcess(t, "challtestsrv.log", nil, challBin,
		"-dnsserver", dnsAddr, "-management", challMgmt, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
	waitForPort(t, challMgmt)
	startProcess(t, "pebble.log", []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}, pebbleBin,
		"-config", cfgPath, "-dnsserver", dnsAddr)
	waitForPort(t, acmeAddr)
	waitForPort(t, p.mgmt)
	return p
}

// issuingRoots fetches the root Pebble signs certificates with.
func (p *pebble) issuingRoots(t *testing.T) *x509.CertPool {
	t.Helper()
	caPEM, err := os.ReadFile(p.caPath)
	if err != nil {
		t.Fatal(err)
	}
	trust := x509.NewCertPool()
	trust.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: trust}}}
	resp, err := client.Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(body) {
		t.Fatalf("no root in Pebble's answer: %q", body)
	}
	return roots
}

// issuerPolicy returns a tls app automation policy that gets certificates
// for names from Pebble, solving challenges on the ports Pebble checks.
func (p *pebble) issuerPolicy(names ...string) map[string]any {
	return map[string]any{
		"subjects": names,
		"issuers": []any{map[string]any{
			"module":                  "acme",
			"ca":                      p.dirURL,
			"trusted_roots_pem_files": []string{p.caPath},
			"challenges": map[string]any{
				"http":     map[string]any{"alternate_port": p.httpPort},
				"tls-alpn": map[string]any{"alternate_port": p.tlsPort},
			},
		}},
	}
}

func TestZeroTouchACMEWithPebble(t *testing.T) {
	p := startPebble(t)
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
			"automation": map[string]any{"policies": []any{p.issuerPolicy(host)}},
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
	st := d.startTLS(&tls.Config{ServerName: host, RootCAs: p.issuingRoots(t)})
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
