package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

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
	pb := testutil.StartPebble(t)
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
		map[string]any{"automation": map[string]any{"policies": []any{pb.Policy(host)}}}))
	g.waitPort(second)

	p := newPostfix(t, nil)
	root := filepath.Join(p.conf, "pebble-root.crt")
	if err := os.WriteFile(root, pb.IssuingRoot(t), 0o644); err != nil {
		t.Fatal(err)
	}
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
