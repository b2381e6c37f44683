package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// gateway is caddy-smtp running as its own process (`caddy run` with a
// JSON config), with its own storage (and so its own internal CA), spool,
// mail directory and admin socket. Its log (JSON lines on stderr) is kept
// in a file for assertions.
type gateway struct {
	t       *testing.T
	dir     string
	storage string
	spool   string
	mail    string
	admin   string // admin API unix socket
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	dir := t.TempDir()
	return &gateway{
		t:       t,
		dir:     dir,
		storage: filepath.Join(dir, "storage"),
		spool:   filepath.Join(dir, "spool"),
		mail:    filepath.Join(dir, "mail"),
		admin:   filepath.Join(dir, "admin.sock"),
		logPath: filepath.Join(dir, "caddy.log"),
	}
}

// config returns a complete Caddy config around an smtp app. The queue
// (in the gateway's spool directory, fast retries), a short grace period
// and, when no routes are given, a route of example.test into the
// gateway's maildir are filled in. tlsApp may be nil.
func (g *gateway) config(smtpApp map[string]any, tlsApp map[string]any) map[string]any {
	if _, ok := smtpApp["queue"]; !ok {
		smtpApp["queue"] = map[string]any{"path": g.spool, "retry_initial": "200ms", "retry_max": "1s"}
	}
	if _, ok := smtpApp["grace_period"]; !ok {
		smtpApp["grace_period"] = "2s"
	}
	if _, ok := smtpApp["routes"]; !ok {
		smtpApp["routes"] = []any{g.maildirRoute("example.test")}
	}
	apps := map[string]any{
		// Never touch the system trust store.
		"pki":  map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
		"smtp": smtpApp,
	}
	if tlsApp != nil {
		apps["tls"] = tlsApp
	}
	return map[string]any{
		"admin":   map[string]any{"listen": "unix/" + g.admin},
		"storage": map[string]any{"module": "file_system", "root": g.storage},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{
			"level":   "INFO",
			"writer":  map[string]any{"output": "stderr"},
			"encoder": map[string]any{"format": "json"},
		}}},
		"apps": apps,
	}
}

// maildirRoute delivers mail for domain into <mail>/<domain>/<local>.
func (g *gateway) maildirRoute(domain string) map[string]any {
	return map[string]any{
		"domains": []string{domain},
		"deliver": map[string]any{"target": "maildir", "path": filepath.Join(g.mail, "{domain}", "{local}"), "create_mailboxes": true},
	}
}

// start runs `caddy run` with cfg and waits until every address in addrs
// accepts connections. The process is stopped (SIGTERM, then SIGKILL) by
// its PID when the test ends, also on failure.
func (g *gateway) start(cfg map[string]any, addrs ...string) {
	g.t.Helper()
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		g.t.Fatal(err)
	}
	cfgPath := filepath.Join(g.dir, "caddy.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		g.t.Fatal(err)
	}
	logf, err := os.OpenFile(g.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		g.t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "run", "--config", cfgPath)
	cmd.Dir = g.dir
	cmd.Env = append(os.Environ(),
		"XDG_CONFIG_HOME="+filepath.Join(g.dir, "xdg-config"), // autosave.json
		"XDG_DATA_HOME="+filepath.Join(g.dir, "xdg-data"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		g.t.Fatalf("starting caddy: %v", err)
	}
	g.cmd = cmd
	g.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(g.exited)
	}()
	g.t.Cleanup(g.stop)
	for _, a := range addrs {
		g.waitPort(a)
	}
}

// stop ends the process: SIGTERM (Caddy's graceful exit), SIGKILL if it
// is still there after 20s. A race report in its output fails the test.
func (g *gateway) stop() {
	if g.cmd == nil {
		return
	}
	select {
	case <-g.exited:
	default:
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
		case <-time.After(20 * time.Second):
			g.t.Errorf("caddy (pid %d) did not exit 20s after SIGTERM; killing it", g.cmd.Process.Pid)
			_ = g.cmd.Process.Kill()
			<-g.exited
		}
	}
	out, _ := os.ReadFile(g.logPath)
	if bytes.Contains(out, []byte("WARNING: DATA RACE")) {
		g.t.Errorf("the gateway process reported a data race:\n%s", out)
	} else if g.t.Failed() {
		g.t.Logf("gateway log (last lines):\n%s", tail(string(out), 80))
	}
}

// waitPort waits until addr accepts connections, failing early if the
// process exits.
func (g *gateway) waitPort(addr string) {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-g.exited:
			out, _ := os.ReadFile(g.logPath)
			g.t.Fatalf("caddy exited before listening on %s:\n%s", addr, out)
		default:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("caddy is not listening on %s: %v", addr, err)
		}
		pause(50 * time.Millisecond)
	}
}

// reload loads a new config through the admin API (POST /load on the
// unix socket), as `caddy reload` does.
func (g *gateway) reload(cfg map[string]any) {
	g.t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		g.t.Fatal(err)
	}
	client := &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", g.admin)
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://localhost/load", "application/json", bytes.NewReader(raw))
	if err != nil {
		g.t.Fatalf("POST /load: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("POST /load: %s: %s", resp.Status, body)
	}
}

// queueLen asks the admin API how many messages are queued (-1 on error).
func (g *gateway) queueLen() int {
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", g.admin)
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://localhost/smtp/queue")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var msgs []json.RawMessage
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&msgs) != nil {
		return -1
	}
	return len(msgs)
}

// rootPath is the internal CA's root certificate in the gateway's storage.
func (g *gateway) rootPath() string {
	return filepath.Join(g.storage, "pki", "authorities", "local", "root.crt")
}

// logEntries returns the JSON log lines written so far; other output (a
// race report, for example) is skipped.
func (g *gateway) logEntries() []map[string]any {
	f, err := os.Open(g.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// waitLog waits until a log entry with message msg satisfies match and
// returns it.
func (g *gateway) waitLog(msg string, limit time.Duration, match func(map[string]any) bool) map[string]any {
	g.t.Helper()
	var found map[string]any
	testutil.Eventually(g.t, limit, fmt.Sprintf("gateway log entry %q", msg), func() bool {
		for _, e := range g.logEntries() {
			if e["msg"] == msg && match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// maildir is the Maildir of one recipient of the default route.
func (g *gateway) maildir(domain, local string) string {
	return filepath.Join(g.mail, domain, local)
}

// waitMaildir waits until the Maildir holds n messages in new/ and
// returns their paths, sorted.
func waitMaildir(t *testing.T, dir string, n int, limit time.Duration) []string {
	t.Helper()
	var files []string
	testutil.Eventually(t, limit, fmt.Sprintf("%d message(s) in %s", n, dir), func() bool {
		files, _ = filepath.Glob(filepath.Join(dir, "new", "*"))
		return len(files) >= n
	})
	if len(files) != n {
		t.Fatalf("%d messages in %s, want %d", len(files), dir, n)
	}
	sort.Strings(files)
	return files
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
