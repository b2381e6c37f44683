package milter

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/maildir"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/mx"
	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

// dkimKey is an RSA key made for a test, with its DNS record text.
type dkimKey struct {
	key     *rsa.PrivateKey
	pemFile string // PKCS#1, as opendkim reads it
	txt     string
}

func newDKIMKey(t *testing.T, dir string) *dkimKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "sel.private")
	writeFile(t, f, string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})))
	return &dkimKey{key: k, pemFile: f, txt: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// opendkimDir is a temporary directory for opendkim's files: not under
// /tmp, as opendkim refuses a config file or key with an ancestor
// directory that others may write. It is removed when the test ends.
func opendkimDir(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(cache, "caddy-smtp-tests")
	if err := os.MkdirAll(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(parent, "opendkim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startOpenDKIM runs opendkim in the foreground with conf (plus its
// socket, pid file and no syslog) on a free loopback port, and returns
// the milter address; dir is from opendkimDir. It is killed by its PID when the test ends. Without
// opendkim the test is skipped (failed under CI=true).
func startOpenDKIM(t *testing.T, dir, conf string) string {
	t.Helper()
	bin := testutil.RequireTool(t, "opendkim")
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	_, port, _ := strings.Cut(addr, ":")
	confFile := filepath.Join(dir, "opendkim.conf")
	writeFile(t, confFile, conf+fmt.Sprintf(`
Socket inet:%s@127.0.0.1
Background no
PidFile %s/opendkim.pid
Syslog no
UMask 077
`, port, dir))
	testutil.StartProcess(t, filepath.Join(t.TempDir(), "opendkim.log"), nil, bin, "-f", "-x", confFile)
	testutil.WaitForPort(t, addr, 10*time.Second)
	return addr
}

// startGateway runs the smtp app with one plaintext listener and a route
// for example.test with the milter check (JSON of smtp.checks.milter),
// delivering to maildirs.
func startGateway(t *testing.T, check map[string]any) *gateway {
	t.Helper()
	return startGatewayWith(t, check, false)
}

// startGatewayWith is startGateway; onServer puts the check on the
// server instead, with 127.0.0.0/8 in its relay_networks (trusted).
func startGatewayWith(t *testing.T, check map[string]any, onServer bool) *gateway {
	t.Helper()
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	mail := filepath.Join(dir, "mail")
	check["check"] = "milter"
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": testutil.StorageDir(t)},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"smtp": map[string]any{
			"hostname": "mx.example.internal",
			"queue":    map[string]any{"path": spool},
			"servers": map[string]any{"mx": map[string]any{
				"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			}},
			"routes": []any{map[string]any{
				"domains": []string{"example.test"},
				"checks":  []any{check},
				"deliver": map[string]any{"target": "maildir", "path": filepath.Join(mail, "{local}"), "create_mailboxes": true},
			}},
		}},
	}
	if onServer {
		smtp := cfg["apps"].(map[string]any)["smtp"].(map[string]any)
		smtp["servers"].(map[string]any)["mx"].(map[string]any)["checks"] = []any{check}
		smtp["servers"].(map[string]any)["mx"].(map[string]any)["relay_networks"] = []string{"127.0.0.0/8"}
		delete(smtp["routes"].([]any)[0].(map[string]any), "checks")
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		_ = caddy.Stop()
		testutil.Eventually(t, 15*time.Second, "queue closed after stop", func() bool {
			f, err := spoolfs.Lock(spool, "msg")
			if err == nil {
				f.Close()
			}
			return err == nil
		})
	})
	app, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		t.Fatal(err)
	}
	a := app.(*smtpapp.App)
	return &gateway{addr: a.Servers["mx"].Addrs()[0].String(), mail: mail, app: a}
}

// gateway is a running smtp app: its listener's address, the root of its
// maildirs, and the app.
type gateway struct {
	addr, mail string
	app        *smtpapp.App
}

// smtpClient is a plain SMTP dialog for the tests.
type smtpClient struct {
	t *testing.T
	c *textproto.Conn
}

func dialSMTP(t *testing.T, addr string) *smtpClient {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	s := &smtpClient{t, c}
	s.cmd(250, "", "EHLO client.example.test")
	return s
}

// cmd sends a command and returns the reply, failing unless it has the
// code and starts with prefix.
func (s *smtpClient) cmd(code int, prefix, format string, args ...any) string {
	s.t.Helper()
	id, err := s.c.Cmd(format, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	s.c.StartResponse(id)
	defer s.c.EndResponse(id)
	_, msg, err := s.c.ReadResponse(code)
	if err != nil || !strings.HasPrefix(msg, prefix) {
		s.t.Fatalf("%q: reply %v %q, want %d %s", format, err, msg, code, prefix)
	}
	return msg
}

// data sends msg (CRLF lines) and returns the final reply, failing unless
// it has the code and starts with prefix.
func (s *smtpClient) data(msg string, code int, prefix string) string {
	s.t.Helper()
	s.cmd(354, "", "DATA")
	w := s.c.DotWriter()
	if _, err := w.Write([]byte(strings.ReplaceAll(msg, "\r\n", "\n"))); err != nil {
		s.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		s.t.Fatal(err)
	}
	_, reply, err := s.c.ReadResponse(code)
	if err != nil || !strings.HasPrefix(reply, prefix) {
		s.t.Fatalf("end of data: reply %v %q, want %d %s", err, reply, code, prefix)
	}
	return reply
}

// delivered waits for the one message in the mailbox of local and
// returns it.
func (g *gateway) delivered(t *testing.T, local string) []byte {
	t.Helper()
	var msg []byte
	testutil.Eventually(t, 15*time.Second, "a message in the mailbox of "+local, func() bool {
		files, _ := filepath.Glob(filepath.Join(g.mail, local, "new", "*"))
		if len(files) == 0 {
			return false
		}
		var err error
		msg, err = os.ReadFile(files[0])
		return err == nil
	})
	return msg
}

const testMessage = "From: Alice <alice@example.test>\r\n" +
	"To: bob@example.test\r\n" +
	"Subject: a signed\r\n\tmessage\r\n" +
	"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n" +
	"Message-ID: <m1@example.test>\r\n" +
	"\r\n" +
	"Hello Bob,\r\n\r\nthis message goes through OpenDKIM.\r\n"

// TestOpenDKIMSigns: OpenDKIM in signing mode, asked by the milter check
// on a route, or on the server for a trusted (relay_networks) client, signs a message from its domain; the delivered message
// carries its DKIM-Signature (added from the milter's header action), and
// the signature verifies against the key in DNS. OpenDKIM's default
// simple/simple canonicalization is used: the header fields and body
// reach it byte for byte (folding too), and its folded DKIM-Signature
// field is kept as it made it.
func TestOpenDKIMSigns(t *testing.T) {
	for _, onServer := range []bool{false, true} {
		t.Run(fmt.Sprintf("on server %v", onServer), func(t *testing.T) { testOpenDKIMSigns(t, onServer) })
	}
}

func testOpenDKIMSigns(t *testing.T, onServer bool) {
	testutil.RequireTool(t, "opendkim")
	dir := opendkimDir(t)
	key := newDKIMKey(t, dir)
	milterAddr := startOpenDKIM(t, dir, fmt.Sprintf(`Mode s
Domain example.test
Selector sel
KeyFile %s
`, key.pemFile))
	dns := testdns.Start(t)
	dns.AddTXT("sel._domainkey.example.test", key.txt[:200], key.txt[200:])

	gw := startGatewayWith(t, map[string]any{"address": milterAddr, "timeout": "5s"}, onServer)
	c := dialSMTP(t, gw.addr)
	c.cmd(250, "", "MAIL FROM:<alice@example.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.data(testMessage, 250, "")
	msg := gw.delivered(t, "bob")
	if !bytes.Contains(msg, []byte("DKIM-Signature:")) || !bytes.Contains(msg, []byte("s=sel")) || !bytes.Contains(msg, []byte("c=simple/simple")) {
		t.Fatalf("no DKIM-Signature by OpenDKIM in the delivered message:\n%s", msg)
	}
	r, err := resolver.New([]string{dns.Addr()}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return r.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(verifs) != 1 || verifs[0].Err != nil || verifs[0].Domain != "example.test" {
		t.Fatalf("verifications %+v of:\n%s", verifs, msg)
	}
}

// TestOpenDKIMRejectsBadSignature: OpenDKIM verifying with
// On-BadSignature reject refuses a message whose body was changed after
// signing (with its reply: 550 5.7.0 bad DKIM signature data), and takes the intact one, adding
// its Authentication-Results.
func TestOpenDKIMRejectsBadSignature(t *testing.T) {
	testutil.RequireTool(t, "opendkim")
	dir := opendkimDir(t)
	key := newDKIMKey(t, dir)
	keys := filepath.Join(dir, "keys")
	writeFile(t, keys, "sel._domainkey.example.test "+key.txt+"\n")
	milterAddr := startOpenDKIM(t, dir, fmt.Sprintf(`Mode v
On-BadSignature reject
TestPublicKeys %s
AuthservID milter.example.test
`, keys))
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, strings.NewReader(testMessage), &dkim.SignOptions{
		Domain: "example.test", Selector: "sel", Signer: key.key, Hash: crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
	}); err != nil {
		t.Fatal(err)
	}

	gw := startGateway(t, map[string]any{"address": milterAddr})
	c := dialSMTP(t, gw.addr)
	c.cmd(250, "", "MAIL FROM:<alice@example.test>")
	c.cmd(250, "", "RCPT TO:<carol@example.test>")
	c.data(strings.Replace(signed.String(), "Hello Bob", "Hello Eve", 1), 550, "5.7.0 bad DKIM signature")

	c.cmd(250, "", "MAIL FROM:<alice@example.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.data(signed.String(), 250, "")
	msg := gw.delivered(t, "bob")
	if !bytes.Contains(msg, []byte("Authentication-Results: milter.example.test")) || !bytes.Contains(msg, []byte("dkim=pass")) {
		t.Fatalf("no dkim=pass from OpenDKIM in the delivered message:\n%s", msg)
	}
	if files, _ := filepath.Glob(filepath.Join(gw.mail, "carol", "new", "*")); len(files) != 0 {
		t.Errorf("the tampered message was delivered")
	}
}

// TestMilterUnreachable: with nothing listening at the milter's address,
// the recipient gets the default action: 451 4.7.1 by default, 550 5.7.1
// with default_action reject, and with accept the message goes through.
func TestMilterUnreachable(t *testing.T) {
	down := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	for _, tc := range []struct {
		action string
		code   int
		prefix string
	}{
		{"", 451, "4.7.1"},
		{"reject", 550, "5.7.1"},
		{"accept", 250, ""},
	} {
		t.Run("default_action "+tc.action, func(t *testing.T) {
			gw := startGateway(t, map[string]any{"address": down, "timeout": "2s", "default_action": tc.action})
			c := dialSMTP(t, gw.addr)
			c.cmd(250, "", "MAIL FROM:<alice@example.test>")
			reply := c.cmd(tc.code, tc.prefix, "RCPT TO:<bob@example.test>")
			if strings.Contains(reply, "127.0.0.1") || strings.Contains(reply, "milter") {
				t.Errorf("reply %q tells about the milter", reply)
			}
			if tc.code == 250 {
				c.data(testMessage, 250, "")
				gw.delivered(t, "bob")
			}
		})
	}
}
