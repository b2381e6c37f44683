package testutil

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
)

// DKIMKeys signs test messages with python3-dkim's dkimsign, a signer
// independent of the library the dkim check verifies with, and publishes
// the public keys in a loopback DNS server.
type DKIMKeys struct {
	t       testing.TB
	dkimsig string
	dir     string
	rsaKey  string // PEM file
	edKey   string // base64 seed file, as dkimpy reads Ed25519 keys
	rsaTXT  string
	edTXT   string
}

func NewDKIMKeys(t testing.TB) *DKIMKeys {
	t.Helper()
	k := &DKIMKeys{t: t, dkimsig: RequireTool(t, "dkimsign"), dir: t.TempDir()}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rk)
	k.rsaKey = filepath.Join(k.dir, "rsa.pem")
	if err := os.WriteFile(k.rsaKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	k.rsaTXT = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k.edKey = filepath.Join(k.dir, "ed.key")
	if err := os.WriteFile(k.edKey, []byte(base64.StdEncoding.EncodeToString(edPriv.Seed())), 0o600); err != nil {
		t.Fatal(err)
	}
	k.edTXT = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(edPub)
	return k
}

// Publish puts the keys under selectors "rsa" and "ed" of domain.
func (k *DKIMKeys) Publish(dns *testdns.Server, domain string) {
	dns.AddTXT("rsa._domainkey."+domain, TXTStrings(k.rsaTXT)...)
	dns.AddTXT("ed._domainkey."+domain, TXTStrings(k.edTXT)...)
}

// TXTStrings splits a TXT record's text into character strings of at
// most 255 bytes.
func TXTStrings(s string) []string {
	var out []string
	for len(s) > 255 {
		out, s = append(out, s[:255]), s[255:]
	}
	return append(out, s)
}

// dkimpyVerify is python3-dkim's verifier, with the keys given to it
// instead of looked up (its command-line dkimverify asks the system's
// DNS); it verifies every signature of the message.
const dkimpyVerify = `
import sys, json, dkim
keys = json.load(open(sys.argv[1]))
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    v = keys.get(n.rstrip("."))
    return v.encode() if v else b""
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
n = len([l for l in msg.split(b"\r\n\r\n")[0].split(b"\r\n") if l.lower().startswith(b"dkim-signature:")])
ok = n > 0 and all(d.verify(idx=i, dnsfunc=dnsfunc) for i in range(n))
print("signature ok" if ok else "signature bad")
`

// VerifyIndependently verifies msg's DKIM signatures by domain, made
// with these keys, with python3-dkim (the interpreter that runs its
// dkimverify).
func (k *DKIMKeys) VerifyIndependently(msg []byte, domain string) string {
	k.t.Helper()
	return DKIMPyVerify(k.t, msg, map[string]string{"rsa._domainkey." + domain: k.rsaTXT, "ed._domainkey." + domain: k.edTXT})
}

// DKIMPyVerify verifies every DKIM signature of msg with python3-dkim,
// the key records given by name (`<selector>._domainkey.<domain>`); it
// returns "signature ok" when all verify.
func DKIMPyVerify(t testing.TB, msg []byte, keys map[string]string) string {
	t.Helper()
	tool := RequireTool(t, "dkimverify")
	head, err := os.ReadFile(tool)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(head), "\n")
	python := strings.Fields(strings.TrimPrefix(first, "#!"))
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	kj, _ := json.Marshal(keys)
	if err := os.WriteFile(keysFile, kj, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python[0], append(python[1:], "-c", dkimpyVerify, keysFile)...)
	cmd.Stdin = strings.NewReader(string(msg))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3-dkim: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// Sign returns msg (CRLF lines) with a DKIM-Signature by domain under
// selector "rsa" or "ed" (relaxed/relaxed), made by dkimsign.
func (k *DKIMKeys) Sign(msg, domain, selector string) string {
	k.t.Helper()
	args := []string{"--hcanon", "relaxed", "--bcanon", "relaxed"}
	key := k.rsaKey
	if selector == "ed" {
		args, key = append(args, "--signalg", "ed25519-sha256"), k.edKey
	}
	cmd := exec.Command(k.dkimsig, append(args, selector, domain, key)...)
	cmd.Stdin = strings.NewReader(msg)
	out, err := cmd.Output()
	if err != nil {
		k.t.Fatalf("dkimsign: %v", err)
	}
	signed := strings.ReplaceAll(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n", "\r\n")
	if !strings.HasPrefix(signed, "DKIM-Signature:") || !strings.HasSuffix(signed, msg) {
		k.t.Fatalf("dkimsign did not prepend a signature:\n%s", signed)
	}
	return signed
}
