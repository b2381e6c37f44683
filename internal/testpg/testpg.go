// Package testpg runs a private PostgreSQL server for tests: initdb into
// a temporary directory and the postgres server on a free loopback port,
// as an unprivileged user, with fsync and synchronous_commit on. It uses
// the Debian postgresql binaries (/usr/lib/postgresql/*/bin); no system
// service is involved.
package testpg

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// Server is a running (or stopped) private PostgreSQL server.
type Server struct {
	dir  string // owned by the server's user
	bin  string
	port int
	cred *syscall.Credential // nil when the tests do not run as root
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	logf *os.File
}

// binDir finds the newest Debian PostgreSQL bin directory that has initdb
// and postgres, or returns "".
func binDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return ""
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Start creates a database cluster and starts a server on it; it is
// stopped and removed when the test ends. Without the binaries the test
// is skipped, or fails under CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := binDir()
	if bin == "" {
		if testutil.InCI() {
			t.Fatal("PostgreSQL is not installed (/usr/lib/postgresql/*/bin); .ci/run must install postgresql")
		}
		t.Skip("PostgreSQL is not installed (apt-get install postgresql to run this test; CI does)")
	}
	s := &Server{bin: bin, port: testutil.FreePort(t)}
	dir, err := os.MkdirTemp("", "testpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s.dir = dir
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		s.cred = postgresUser(t)
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	// --no-sync only skips initdb's final flush of the new cluster; the
	// server itself runs with fsync on.
	initdb := s.command("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--no-locale", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.start(t)
	t.Cleanup(func() { s.stop(t) })
	return s
}

// postgresUser is the unprivileged user the server runs as when the tests
// run as root: Debian's postgres system user.
func postgresUser(t testing.TB) *syscall.Credential {
	u, err := user.Lookup("postgres")
	if err != nil {
		if testutil.InCI() {
			t.Fatalf("running as root and there is no postgres user: %v", err)
		}
		t.Skipf("running as root and there is no postgres user to run PostgreSQL as: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	attr := testutil.ChildAttr()
	attr.Credential = s.cred
	cmd.SysProcAttr = attr
	return cmd
}

// DSN is the connection string of the server's postgres database.
func (s *Server) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// Addr is the server's TCP address.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// start runs the postgres server as a child of the test and waits until
// it accepts queries.
func (s *Server) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := s.command("postgres", "-D", s.data(),
		"-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(s.port),
		"-c", "unix_socket_directories="+s.dir,
		"-c", "fsync=on", "-c", "synchronous_commit=on",
		"-c", "max_connections=200", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting postgres: %v", err)
	}
	s.cmd, s.logf, s.done = cmd, logf, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := s.ping()
		if err == nil {
			return
		}
		select {
		case <-s.done:
			t.Fatalf("postgres exited while starting: %v\n%s", cmd.ProcessState, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres did not accept queries within a minute: %v\n%s", err, s.logTail())
		}
	}
}

func (s *Server) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.Ping(ctx)
}

// stop shuts the server down by its PID with a fast shutdown (what
// pg_ctl stop -m fast sends: SIGINT), killing it if that takes too long.
func (s *Server) stop(t testing.TB) {
	t.Helper()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Errorf("postgres did not stop within 30s of SIGINT\n%s", s.logTail())
	}
	s.logf.Close()
	if t.Failed() {
		t.Logf("postgres log:\n%s", s.logTail())
	}
	s.cmd = nil
}

// Stop shuts the server down (fast shutdown: open connections are ended).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop(t)
}

// Restart starts the server again on the same port and data after Stop
// (or stops it first if it runs).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop(t)
	s.start(t)
}

// Exec runs SQL statements on the server (for test setup and checks).
func (s *Server) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	s.with(t, func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, sql, args...)
		return err
	}, sql)
}

// QueryRow runs a query on the server and scans its one row into dest.
func (s *Server) QueryRow(t testing.TB, sql string, args []any, dest ...any) {
	t.Helper()
	s.with(t, func(ctx context.Context, c *pgx.Conn) error {
		return c.QueryRow(ctx, sql, args...).Scan(dest...)
	}, sql)
}

func (s *Server) with(t testing.TB, f func(context.Context, *pgx.Conn) error, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := f(ctx, c); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// CreateDatabase creates a fresh database on the server and returns its
// connection string, so that tests can share one server.
func (s *Server) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	s.Exec(t, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return strings.Replace(s.DSN(), "/postgres?", "/"+name+"?", 1)
}

func (s *Server) logTail() string {
	out, err := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
