package interop

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pebbleServer is a Pebble ACME server with pebble-challtestsrv as its DNS
// server, which answers 127.0.0.1 for every name: validation is real (no
// PEBBLE_VA_ALWAYS_VALID), against whatever listens on the challenge
// ports here.
type pebbleServer struct {
	dirURL   string // ACME directory
	caPath   string // trust anchor of Pebble's own HTTPS endpoints
	mgmt     string // management address (issuing roots)
	httpPort int    // where Pebble's VA connects for HTTP-01
	tlsPort  int    // where Pebble's VA connects for TLS-ALPN-01
}

func startPebble(t *testing.T) *pebbleServer {
	t.Helper()
	pebbleBin := requireTool(t, "pebble")
	challBin := requireTool(t, "pebble-challtestsrv")
	dir := t.TempDir()
	ca := newCert(t, dir, "https-ca", nil, true, "caddy-smtp interop: Pebble HTTPS CA")
	leaf := newCert(t, dir, "https", ca, false, "localhost", "127.0.0.1")
	p := &pebbleServer{caPath: ca.cert, httpPort: freePort(t), tlsPort: freePort(t)}
	acme := loopback(freePort(t))
	p.mgmt = loopback(freePort(t))
	dns := loopback(freePort(t))
	challMgmt := loopback(freePort(t))
	p.dirURL = "https://" + acme + "/dir"
	raw, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":                  acme,
		"managementListenAddress":        p.mgmt,
		"certificate":                    leaf.cert,
		"privateKey":                     leaf.key,
		"httpPort":                       p.httpPort,
		"tlsPort":                        p.tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}})
	cfg := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfg, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, filepath.Join(dir, "challtestsrv.log"), nil, challBin,
		"-dnsserver", dns, "-management", challMgmt,
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
	waitForPort(t, challMgmt, 30*time.Second)
	startProcess(t, filepath.Join(dir, "pebble.log"), []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		pebbleBin, "-config", cfg, "-dnsserver", dns)
	waitForPort(t, acme, 30*time.Second)
	waitForPort(t, p.mgmt, 30*time.Second)
	return p
}

// policy is a tls app automation policy that gets certificates for names
// from Pebble, answering challenges on the ports Pebble connects to.
func (p *pebbleServer) policy(names ...string) map[string]any {
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

// saveRoot fetches the root Pebble issues under (/roots/0 on its
// management endpoint; new on every start) into dst.
func (p *pebbleServer) saveRoot(t *testing.T, dst string) *x509.CertPool {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: poolFromFile(t, p.caPath)}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pem, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /roots/0: %s %v", resp.Status, err)
	}
	if err := os.WriteFile(dst, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	return poolFromFile(t, dst)
}

// startProcess runs a program until the test ends; it is killed by its
// PID then, also when the test fails, and its output is shown on failure.
func startProcess(t *testing.T, logPath string, env []string, name string, args ...string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("%s output:\n%s", filepath.Base(name), tail(string(out), 60))
		}
	})
}

// TestPebbleReloadThenPostfixVerifies: the gateway starts with one server
// (localhost, internal CA); a reload through the admin API adds a second
// server for mail2.pebble.test, a name it has never seen, with Pebble as
// its ACME CA (real TLS-ALPN-01/HTTP-01 validation). A private Postfix,
// told to verify the certificate against Pebble's issuing root and the
// name mail2.pebble.test, relays through the new server at once (should
// the certificate not be there yet, the handshake waits for it), and
// verification succeeds.
//
// Postfix connects to [127.0.0.1]:port (nothing resolves mail2.pebble.test
// for it, and /etc/hosts stays untouched); the name to verify comes from
// its TLS policy map: "[127.0.0.1]:port verify match=mail2.pebble.test".
func TestPebbleReloadThenPostfixVerifies(t *testing.T) {
	requireTool(t, "swaks")
	pb := startPebble(t)
	const host = "mail2.pebble.test"

	g := newGateway(t)
	first, second := loopback(freePort(t)), loopback(freePort(t))
	servers := map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": first}}}}
	g.start(g.config(map[string]any{"hostname": "localhost", "servers": servers}, nil), first)

	servers["mail2"] = map[string]any{
		"hostname":         host,
		"listen":           []any{map[string]any{"address": second}},
		"certificate_wait": "90s",
	}
	g.reload(g.config(map[string]any{"hostname": "localhost", "servers": servers},
		map[string]any{"automation": map[string]any{"policies": []any{pb.policy(host)}}}))
	g.waitPort(second)

	p := newPostfix(t, nil)
	root := filepath.Join(p.conf, "pebble-root.crt")
	pb.saveRoot(t, root)
	port := portOf(second)
	policy := p.writeFile("tls_policy", []byte(fmt.Sprintf("[127.0.0.1]:%s verify match=%s\n", port, host)), 0o644)
	for k, v := range map[string]string{
		"relayhost": "[127.0.0.1]:" + port,
		// Without the policy entry, verify would match the certificate
		// against 127.0.0.1 and fail: the entry is what makes it pass.
		"smtp_tls_security_level": "verify",
		"smtp_tls_policy_maps":    "texthash:" + policy,
		"smtp_tls_CAfile":         root,
		"smtp_tls_loglevel":       "2", // also log the certificate's names
	} {
		p.settings[k] = v
	}
	p.start()

	orig := interopMessage("through a certificate from pebble", "pebble@sender.test")
	qid, _ := p.submit(orig, 3*time.Minute)
	verified := p.findLog("Verified TLS connection established to 127.0.0.1[127.0.0.1]:" + port)
	if verified == "" {
		t.Fatalf("postfix did not verify the gateway's certificate:\n%s", p.log())
	}
	t.Logf("postfix: %s", verified)
	// smtp_tls_loglevel 2 names the certificate name that matched.
	matched := p.findLog("127.0.0.1[127.0.0.1]:" + port + ": matched peername: " + host)
	if matched == "" {
		t.Fatalf("postfix did not log that %s matched:\n%s", host, p.log())
	}
	t.Logf("postfix: %s", matched)

	checkGatewayCopy(t, g, host, qid, orig)
	e := g.waitLog("certificate obtained successfully", 10*time.Second, func(e map[string]any) bool {
		return e["identifier"] == host
	})
	t.Logf("gateway: certificate for %s obtained from %v", host, e["issuer"])
	for _, x := range g.logEntries() {
		if msg, _ := x["msg"].(string); x["server_name"] == host && strings.HasPrefix(msg, "certificate ") {
			t.Logf("gateway: %s", msg) // the handshake was held for the certificate
		}
	}
}
