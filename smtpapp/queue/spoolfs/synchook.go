package spoolfs

import (
	"os"
	"sync/atomic"
)

// SyncKind says what a sync of the spool formats makes durable.
type SyncKind string

// The syncs the spool formats make.
const (
	SyncFile      SyncKind = "file" // a file's data: a body, an envelope, a segment
	SyncDirectory SyncKind = "dir"  // a directory's entries
)

var syncHook atomic.Pointer[func(path string, kind SyncKind) error]

// SetSyncHook installs fn to run before every sync the spool formats
// make, with the path synced and its kind; an error from fn is the sync's
// result and the sync is skipped. It is a seam for tests that prove a
// reply waits for the sync (fn blocks) or fails with it (fn returns an
// error); nil removes the hook. It returns a function that restores the
// previous hook.
func SetSyncHook(fn func(path string, kind SyncKind) error) (restore func()) {
	var p *func(string, SyncKind) error
	if fn != nil {
		p = &fn
	}
	old := syncHook.Swap(p)
	return func() { syncHook.Store(old) }
}

// hook runs the installed sync hook, if any.
func hook(path string, kind SyncKind) error {
	if fn := syncHook.Load(); fn != nil {
		return (*fn)(path, kind)
	}
	return nil
}

// Fsync fsyncs f (after the sync hook).
func Fsync(f *os.File) error {
	if err := hook(f.Name(), SyncFile); err != nil {
		return err
	}
	return f.Sync()
}

// BeforeSync runs the sync hook for a sync that the caller makes itself
// (an fdatasync): call it first and return its error as the sync's.
func BeforeSync(path string, kind SyncKind) error { return hook(path, kind) }
