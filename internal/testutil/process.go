package testutil

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI (CI=true), where a missing tool
// is a failure, never a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireTool returns the path of an external program. Locally a missing
// program skips the test; under CI=true it fails it, so that CI never
// passes with skipped tests. Besides $PATH it looks in the sbin
// directories (Postfix's commands live in /usr/sbin, which a non-login PATH
// may lack) and in $(go env GOPATH)/bin (Pebble).
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dirs := []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		dirs = append(dirs, filepath.Join(strings.TrimSpace(string(gopath)), "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if InCI() {
		t.Fatalf("%s is not installed; .ci/run must install it", name)
	}
	t.Skipf("%s is not installed (install it to run this test; CI does)", name)
	return ""
}

// FreePort returns a loopback TCP port that was free a moment ago, for
// programs that cannot report the port they bound.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitForPort waits until something accepts TCP connections on addr.
func WaitForPort(t testing.TB, addr string, limit time.Duration) {
	t.Helper()
	var err error
	Eventually(t, limit, "a listener on "+addr, func() bool {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		return false
	})
}

// ChildAttr puts a long-running child in its own process group and asks
// the kernel to kill it should the test binary die without its cleanups
// (a go test timeout, for example).
func ChildAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// StartProcess runs a program until the test ends, with its output in
// logPath; it is killed by its PID then, also when the test fails, and the
// end of its output is shown on failure. The command is returned for a
// test that kills it earlier.
func StartProcess(t testing.TB, logPath string, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = ChildAttr()
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
			lines := strings.Split(string(out), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("%s output:\n%s", filepath.Base(name), strings.Join(lines, "\n"))
		}
	})
	return cmd
}
