package cmdsmtp

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"strings"
	"testing"
)

// TestTLSACommand: `caddy smtp tlsa` connects with STARTTLS and prints the
// 3 1 1 record of the certificate the server presents, for the name asked.
func TestTLSACommand(t *testing.T) {
	cfg, _ := testServerTLS(t, "mx.dane.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveSMTP(t, ln, cfg)
	f, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = f
	cmd := tlsaCommand()
	cmd.SetArgs([]string{"--name", "mx.dane.test", "--timeout", "5s", ln.Addr().String()})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.Execute()
	os.Stdout = stdout
	f.Close()
	out, _ := os.ReadFile(f.Name())
	if err != nil {
		t.Fatalf("tlsa: %v\n%s", err, out)
	}
	sum := sha256.Sum256(cfg.Certificates[0].Leaf.RawSubjectPublicKeyInfo)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	want := "_" + port + "._tcp.mx.dane.test. IN TLSA 3 1 1 " + hex.EncodeToString(sum[:])
	if !strings.HasPrefix(string(out), want) {
		t.Errorf("tlsa printed\n%s\nwant a line starting %q", out, want)
	}
}
