package testutil

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
)

// Rspamd is a private rspamd started by a test.
type Rspamd struct {
	// URL is its normal worker, "http://127.0.0.1:port".
	URL string
	cmd *exec.Cmd
}

// StartRspamd runs rspamd from the system's config with a private
// local.d in a temporary directory: the normal worker (and the controller
// and proxy, which cannot be left out) on free loopback ports, logs to the
// console, DNS to a loopback server that knows nothing (no network
// lookups), the modules that query the network disabled, and the test
// patterns of GTUBE on (its "add header" and "rewrite subject" variants).
// As root it runs as _rspamd (or nobody): rspamd refuses root.
func StartRspamd(t testing.TB) *Rspamd {
	t.Helper()
	bin := RequireTool(t, "rspamd")
	dns := testdns.Start(t)
	// Not t.TempDir(): its parents are private to root, and rspamd
	// drops privileges.
	dir, err := os.MkdirTemp("", "rspamd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := FreePort(t)
	local := map[string]string{
		"worker-normal.inc":     fmt.Sprintf("bind_socket = \"127.0.0.1:%d\";\n", port),
		"worker-controller.inc": fmt.Sprintf("bind_socket = \"127.0.0.1:%d\";\n", FreePort(t)),
		"worker-proxy.inc":      fmt.Sprintf("bind_socket = \"127.0.0.1:%d\";\n", FreePort(t)),
		"logging.inc":           "type = \"console\";\nlevel = \"warning\";\n",
		"options.inc": fmt.Sprintf("enable_test_patterns = true;\n"+
			"dns { nameserver = [\"%s\"]; timeout = 0.5s; retransmits = 1; }\n", dns.Addr()),
	}
	// header fields for the milter block of the reply: the bar and the
	// queue ID rspamd was given
	local["milter_headers.conf"] = "use = [\"x-spamd-bar\", \"x-rspamd-queue-id\"];\nskip_local = false;\nskip_authenticated = false;\n"
	for _, m := range []string{"fuzzy_check", "rbl", "phishing", "asn", "mx_check", "emails", "url_redirector", "dkim_signing", "arc"} {
		local[m+".conf"] = "enabled = false;\n"
	}
	for _, sub := range []string{"db", "run", "log", "etc/local.d"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range local {
		if err := os.WriteFile(filepath.Join(dir, "etc", "local.d", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"-f", "-c", "/etc/rspamd/rspamd.conf",
		"--var", "DBDIR=" + filepath.Join(dir, "db"), "--var", "RUNDIR=" + filepath.Join(dir, "run"),
		"--var", "LOGDIR=" + filepath.Join(dir, "log"), "--var", "LOCAL_CONFDIR=" + filepath.Join(dir, "etc")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("_rspamd")
		if err != nil {
			u, err = user.Lookup("nobody")
		}
		if err != nil {
			t.Fatalf("no unprivileged user to run rspamd as: %v", err)
		}
		g, err := user.LookupGroupId(u.Gid)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chown(p, uid, gid)
		}); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-u", u.Username, "-g", g.Name)
	}
	logPath := filepath.Join(t.TempDir(), "rspamd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = ChildAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Rspamd{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("rspamd output (end):\n%s", tailLines(string(out), 40))
		}
	})
	// Loading the configuration (compiling its regular expressions) takes
	// seconds, and minutes on a machine busy with other tests.
	Eventually(t, 180*time.Second, "rspamd answering /ping", func() bool {
		resp, err := http.Get(p.URL + "/ping")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// Signal sends sig to rspamd's process group (its main process and its
// workers).
func (p *Rspamd) Signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Wait waits for the main process to end.
func (p *Rspamd) Wait() { _ = p.cmd.Wait() }

// CPU returns the CPU time (user and system) that the live processes of
// rspamd's process group have used, read from /proc.
func (p *Rspamd) CPU() time.Duration {
	return GroupCPU(p.cmd.Process.Pid)
}

func tailLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
