package smtpapp_test

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

// syncPoint is one fsync a store makes before it may answer 250.
type syncPoint struct {
	name  string
	store string
	kind  spoolfs.SyncKind
	match func(path string) bool
}

var commitSyncs = []syncPoint{
	{"segments group fdatasync", "segments", spoolfs.SyncFile,
		func(p string) bool { return strings.HasSuffix(p, ".seg") }},
	{"files body fsync", "files", spoolfs.SyncFile,
		func(p string) bool { return strings.HasSuffix(p, ".eml") }},
	{"files envelope fsync", "files", spoolfs.SyncFile,
		func(p string) bool { return strings.HasSuffix(p, ".json") && filepath.Base(filepath.Dir(p)) == "tmp" }},
	{"files msg directory fsync", "files", spoolfs.SyncDirectory,
		func(p string) bool { return filepath.Base(p) == "msg" }},
}

// armSync installs a sync hook that, once armed, hands the first matching
// sync to fn (which decides its result) and lets every other sync pass.
func armSync(t *testing.T, sp syncPoint, fn func() error) (arm func()) {
	var armed atomic.Bool
	restore := spoolfs.SetSyncHook(func(path string, kind spoolfs.SyncKind) error {
		if kind == sp.kind && sp.match(path) && armed.CompareAndSwap(true, false) {
			return fn()
		}
		return nil
	})
	t.Cleanup(restore)
	return func() { armed.Store(true) }
}

// durabilityConfig is the default test config with the given store.
func (e *testEnv) durabilityConfig(store string) map[string]any {
	return e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
		"queue":   map[string]any{"path": e.spool, "store": store, "retry_initial": "50ms", "retry_max": "200ms"},
	})
}

// openData runs a transaction up to the 354 of DATA.
func openData(t *testing.T, addr, rcpt string) *dialog {
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<sender@client.example>", "250")
	d.cmd("RCPT TO:<"+rcpt+">", "250")
	d.cmd("DATA", "354")
	return d
}

// TestDurabilityReplyWaitsForSync blocks each fsync a commit makes and
// checks that the client has no reply while it is blocked and gets 250
// once it returns: "250 means on disk" rests on these syncs. Removing a
// sync (or making it asynchronous) fails the case that blocks it.
func TestDurabilityReplyWaitsForSync(t *testing.T) {
	for _, sp := range commitSyncs {
		t.Run(sp.name, func(t *testing.T) {
			e := newTestEnv(t)
			entered, release := make(chan struct{}), make(chan struct{})
			arm := armSync(t, sp, func() error {
				close(entered)
				<-release
				return nil
			})
			addr := addrsOf(e.load(e.durabilityConfig(sp.store)), "mx")[0]
			d := openData(t, addr, "blocked@example.test")
			arm()
			d.raw("Subject: blocked\r\n\r\nbody\r\n.\r\n")
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				close(release)
				t.Fatalf("the commit never made the %s", sp.name)
			}
			// The sync is blocked: no reply may come. (A bounded wait
			// for something that must not happen.)
			_ = d.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			line, err := d.r.ReadString('\n')
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				close(release)
				t.Fatalf("reply %q (err %v) while the %s was blocked", line, err, sp.name)
			}
			_ = d.conn.SetReadDeadline(time.Now().Add(time.Minute))
			close(release)
			d.expect("250 2.0.0")
			e.waitMail("example.test", "blocked", 1)
		})
	}
}

// TestDurabilityFailedSyncIsNotAcknowledged fails each fsync a commit
// makes: the client gets 451 4.3.0, and the message is never delivered,
// also not after the gateway is restarted on the same spool.
func TestDurabilityFailedSyncIsNotAcknowledged(t *testing.T) {
	for _, sp := range commitSyncs {
		t.Run(sp.name, func(t *testing.T) {
			e := newTestEnv(t)
			var failed atomic.Int32
			arm := armSync(t, sp, func() error {
				failed.Add(1)
				return syscall.EIO
			})
			cfg := e.durabilityConfig(sp.store)
			addr := addrsOf(e.load(cfg), "mx")[0]
			d := openData(t, addr, "failed@example.test")
			arm()
			d.raw("Subject: failed\r\n\r\nbody\r\n.\r\n")
			d.expect("451 4.3.0")
			if failed.Load() != 1 {
				t.Fatalf("the %s ran %d times with the failing hook", sp.name, failed.Load())
			}
			d.cmd("QUIT", "221")

			// Restart on the same spool: what is on disk is all there is.
			if err := caddy.Stop(); err != nil {
				t.Fatal(err)
			}
			waitSpoolFree(t, e.spool)
			app := e.load(cfg)
			if n := app.TestQueue().Len(); n != 0 {
				t.Fatalf("%d messages loaded after the restart, want 0 (the 451 message came back)", n)
			}
			submit(t, addrsOf(app, "mx")[0], "sender@client.example", "Subject: ok\r\n\r\nbody", "ok@example.test")
			e.waitMail("example.test", "ok", 1)
			if got := e.mailFiles("example.test", "failed"); len(got) != 0 {
				t.Fatalf("the message answered 451 was delivered: %v", got)
			}
		})
	}
}

// waitSpoolFree waits until the stopped gateway has released the spool.
func waitSpoolFree(t *testing.T, spool string) {
	t.Helper()
	eventually(t, "spool released", func() bool {
		l, err := spoolfs.Lock(spool, "msg")
		if err != nil {
			return false
		}
		l.Close()
		return true
	})
}
