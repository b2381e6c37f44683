package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// caddyBin is the Caddy binary with this plugin, built once by TestMain.
var caddyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "interop-caddy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddyBin = filepath.Join(dir, "caddy")
	if err := buildCaddy(caddyBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildCaddy builds ./cmd/caddy of this module into out, with the race
// detector when the tests run with it.
func buildCaddy(out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/caddy")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	fmt.Fprintf(os.Stderr, "interop: built %s in %s (race=%v)\n", out, time.Since(start).Round(time.Second), raceEnabled)
	return nil
}

// inCI reports whether missing tools must fail tests instead of skipping.
func inCI() bool { return testutil.InCI() }

// requireTool: see testutil.RequireTool (skips locally, fails in CI).
func requireTool(t *testing.T, name string) string { return testutil.RequireTool(t, name) }

// requireRoot: a private Postfix instance needs root (its master process
// drops privileges to the postfix user itself).
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if inCI() {
		t.Fatal("the Postfix tests need root; CI runs as root")
	}
	t.Skip("the Postfix tests need root")
}

func freePort(t *testing.T) int { return testutil.FreePort(t) }

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// portOf returns the port of a host:port address.
func portOf(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// requireAnyTool is requireTool for a program known under several names
// (testssl.sh is `testssl` in Debian).
func requireAnyTool(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return requireTool(t, names[0])
}

func childAttr() *syscall.SysProcAttr { return testutil.ChildAttr() }

func waitForPort(t *testing.T, addr string, limit time.Duration) {
	testutil.WaitForPort(t, addr, limit)
}

func pause(d time.Duration) {
	tm := time.NewTimer(d)
	<-tm.C
}

// toolResult is what a finished external command left.
type toolResult struct {
	out  string // stdout and stderr, interleaved
	code int    // exit code; -1 when killed
}

// runTool runs a program to completion with a time limit. It runs in its
// own process group, and when the limit passes the whole group is killed
// (by the group's ID, the program's PID), so that helpers it started
// (openssl under testssl.sh) go with it; the test then fails.
func runTool(t *testing.T, limit time.Duration, stdin []byte, env []string, name string, args ...string) toolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	res := toolResult{out: out.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		t.Fatalf("running %s: %v\n%s", name, err, res.out)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after %s; killed\n%s", name, strings.Join(args, " "), limit, res.out)
	}
	return res
}
