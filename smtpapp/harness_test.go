package smtpapp_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/caddy-smtp/caddy-smtp/smtpapp"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddypki"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

// testHost is the server hostname used by tests: an internal name, so the
// tls app gets its certificate from Caddy's internal CA.
const testHost = "mx.example.internal"

// testEnv is a Caddy instance running in this test process, with its own
// storage, spool and mail directories.
type testEnv struct {
	t       *testing.T
	dir     string
	storage string
	spool   string
	mail    string
}

// sharedStorage is the Caddy storage of all tests in this package: the
// internal CA is created once, and certificate work that Caddy finishes in
// the background after a test has stopped it writes into a directory that
// outlives the test.
var sharedStorage string

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childConfigEnv); cfg != "" {
		runChild(cfg) // never returns
	}
	dir, err := os.MkdirTemp("", "smtpapp-storage-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedStorage = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// childConfigEnv makes the test binary run as a plain Caddy process with
// the config file it names, for tests that kill a gateway.
const childConfigEnv = "SMTPAPP_TEST_CHILD_CONFIG"

func runChild(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	caddy.TrapSignals() // SIGTERM/SIGINT: a graceful exit, as `caddy run`
	if err := caddy.Load(raw, true); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	select {}
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	dir := t.TempDir()
	e := &testEnv{
		t:       t,
		dir:     dir,
		storage: sharedStorage,
		spool:   filepath.Join(dir, "spool"),
		mail:    filepath.Join(dir, "mail"),
	}
	return e
}

// config returns a complete Caddy config around the given smtp app config.
// Missing spool_dir and hostname are filled in.
func (e *testEnv) config(smtpApp map[string]any, extra ...func(map[string]any)) map[string]any {
	if _, ok := smtpApp["queue"]; !ok {
		smtpApp["queue"] = map[string]any{"path": e.spool, "retry_initial": "50ms", "retry_max": "200ms"}
	}
	if _, ok := smtpApp["hostname"]; !ok {
		smtpApp["hostname"] = testHost
	}
	if _, ok := smtpApp["routes"]; !ok {
		smtpApp["routes"] = []any{map[string]any{
			"domains": []string{"example.test"},
			"deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true},
		}}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": e.storage},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps": map[string]any{
			"pki":  map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"smtp": smtpApp,
		},
	}
	for _, f := range extra {
		f(cfg)
	}
	return cfg
}

// load loads a config into the process-wide Caddy instance and returns the
// running smtp app. Caddy is stopped when the test ends.
func (e *testEnv) load(cfg map[string]any) *App {
	e.t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		e.t.Fatalf("loading config: %v", err)
	}
	app := runningApp(e.t)
	spool := app.Queue.Path
	e.t.Cleanup(func() {
		_ = caddy.Stop()
		// A stop lets sessions and deliveries finish in the background;
		// wait until the queue is closed before the test's files go.
		eventually(e.t, "queue closed after stop", func() bool {
			// The spool's lock is free once the scheduler has stopped
			// and its last delivery has returned.
			s, err := spoolfs.Lock(spool, "msg")
			if err != nil {
				return false
			}
			s.Close()
			return true
		})
	})
	return app
}

// runningApp returns the smtp app of the active config.
func runningApp(t *testing.T) *App {
	t.Helper()
	app, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		t.Fatalf("smtp app: %v", err)
	}
	return app.(*App)
}

// start runs one server named "mx" with the given server config (listen
// defaults to one STARTTLS listener on 127.0.0.1:0) and returns its
// addresses in listen order.
func (e *testEnv) start(server map[string]any) []string {
	e.t.Helper()
	if _, ok := server["listen"]; !ok {
		server["listen"] = []any{map[string]any{"address": "127.0.0.1:0"}}
	}
	app := e.load(e.config(map[string]any{"servers": map[string]any{"mx": server}}))
	return addrsOf(app, "mx")
}

func addrsOf(app *App, server string) []string {
	var out []string
	for _, a := range app.Servers[server].Addrs() {
		out = append(out, a.String())
	}
	return out
}

// rootPool returns a pool holding Caddy's internal CA root from storage.
func (e *testEnv) rootPool() *x509.CertPool {
	e.t.Helper()
	pem, err := os.ReadFile(filepath.Join(e.storage, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		e.t.Fatalf("reading internal CA root: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		e.t.Fatal("no certificate in root.crt")
	}
	return pool
}

// mailFiles returns the files delivered to the maildir of a recipient.
func (e *testEnv) mailFiles(domain, local string) []string {
	files, _ := filepath.Glob(filepath.Join(e.mail, domain, local, "new", "*"))
	return files
}

// waitMail waits until the maildir of a recipient holds n messages (the
// queue delivers in the background) and returns them.
func (e *testEnv) waitMail(domain, local string, n int) []string {
	e.t.Helper()
	var files []string
	eventually(e.t, fmt.Sprintf("%d messages for %s@%s", n, local, domain), func() bool {
		files = e.mailFiles(domain, local)
		return len(files) >= n
	})
	if len(files) != n {
		e.t.Fatalf("%d messages for %s@%s, want %d", len(files), local, domain, n)
	}
	return files
}

// eventually polls cond until it holds, failing the test after 15s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, what, cond)
}

// dialog is a line-oriented SMTP client for tests: it sends raw commands
// and checks raw replies.
type dialog struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *dialog {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return newDialog(t, c)
}

func dialTLS(t *testing.T, addr string, cfg *tls.Config) *dialog {
	t.Helper()
	d := &net.Dialer{Timeout: 15 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return newDialog(t, c)
}

func newDialog(t *testing.T, c net.Conn) *dialog {
	_ = c.SetDeadline(time.Now().Add(3 * time.Minute))
	return &dialog{t: t, conn: c, r: bufio.NewReader(c)}
}

// reply reads one complete (possibly multi-line) reply.
func (d *dialog) reply() string {
	d.t.Helper()
	var lines []string
	for {
		line, err := d.r.ReadString('\n')
		if err != nil {
			d.t.Fatalf("reading reply (so far %q): %v", lines, err)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

// expect reads a reply and fails unless it contains every want.
func (d *dialog) expect(want ...string) string {
	d.t.Helper()
	got := d.reply()
	for _, w := range want {
		if !strings.Contains(got, w) {
			d.t.Fatalf("reply %q does not contain %q", got, w)
		}
	}
	return got
}

// send writes a command line (CRLF added).
func (d *dialog) send(format string, args ...any) {
	d.t.Helper()
	if _, err := fmt.Fprintf(d.conn, format+"\r\n", args...); err != nil {
		d.t.Fatalf("send: %v", err)
	}
}

// raw writes bytes as they are.
func (d *dialog) raw(s string) {
	d.t.Helper()
	if _, err := d.conn.Write([]byte(s)); err != nil {
		d.t.Fatalf("write: %v", err)
	}
}

// cmd sends a command and expects a reply containing want.
func (d *dialog) cmd(line string, want ...string) string {
	d.t.Helper()
	d.send("%s", line)
	return d.expect(want...)
}

// startTLS issues STARTTLS and upgrades the connection.
func (d *dialog) startTLS(cfg *tls.Config) *tls.ConnectionState {
	d.t.Helper()
	d.cmd("STARTTLS", "220")
	tc := tls.Client(d.conn, cfg)
	if err := tc.Handshake(); err != nil {
		d.t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	d.conn = tc
	d.r = bufio.NewReader(tc)
	st := tc.ConnectionState()
	return &st
}

// sendMail runs one transaction with DATA and returns the final reply.
func (d *dialog) sendMail(from, to, body string) string {
	d.t.Helper()
	d.cmd("MAIL FROM:<"+from+">", "250")
	d.cmd("RCPT TO:<"+to+">", "250")
	d.cmd("DATA", "354")
	d.raw(body + "\r\n.\r\n")
	return d.reply()
}
