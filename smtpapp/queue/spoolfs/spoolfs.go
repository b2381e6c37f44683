// Package spoolfs holds the file system primitives that the queue's spool
// formats (the smtp.queue.stores modules) share: the spool lock, JSON files
// written and fsynced, directory fsyncs shared by concurrent callers, the
// held-domains file and the check that a spool holds no messages in another
// format. It knows nothing of messages or of Caddy.
package spoolfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Lock creates the spool directory dir with tmp/ and data/ (the format's
// own subdirectory), takes the spool's exclusive lock (an flock on
// dir/lock: one owning process, whatever the format) and clears tmp/:
// bodies left there by a crash were never acknowledged. Closing the
// returned file releases the lock.
func Lock(dir, data string) (*os.File, error) {
	for _, sub := range []string{"tmp", data} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("creating spool: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening spool lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool %s is in use by another process: %w", dir, err)
	}
	if left, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range left {
			os.Remove(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	return lock, nil
}

// RefuseOtherFormat returns an error when the spool dir still holds
// messages in another format: a non-empty file matching pattern (relative
// to dir, e.g. "msg/*.json"). Opening the spool as kind would strand them.
// Empty files do not count: an empty segment is what a drained segment
// spool keeps.
func RefuseOtherFormat(dir, kind, pattern string) error {
	left, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, p := range left {
		if st, err := os.Stat(p); err == nil && st.Size() > 0 {
			return fmt.Errorf("queue store %q: spool %s still holds messages in the other format (%s)", kind, dir, p)
		}
	}
	return nil
}

// WriteJSON writes v as JSON to path (created or truncated, mode 0600)
// and fsyncs it.
func WriteJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := Fsync(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SyncDir fsyncs a directory so that entries created, renamed or removed
// in it are durable.
func SyncDir(dir string) error {
	if err := hook(dir, SyncDirectory); err != nil {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// HeldDomainsFile is the file, directly under the spool directory, where
// the stores keep the recipient domains whose delivery is held.
const HeldDomainsFile = "held-domains.json"

type heldDomainsJSON struct {
	Domains []string `json:"domains"`
}

// LoadHeldDomains reads dir/held-domains.json; nil when there is none.
func LoadHeldDomains(dir string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(dir, HeldDomainsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var v heldDomainsJSON
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", HeldDomainsFile, err)
	}
	return v.Domains, nil
}

// SaveHeldDomains atomically replaces dir/held-domains.json (write to
// dir/tmp, fsync, rename, directory fsync).
func SaveHeldDomains(dir string, domains []string) error {
	if domains == nil {
		domains = []string{}
	}
	tmp := filepath.Join(dir, "tmp", HeldDomainsFile)
	if err := WriteJSON(tmp, heldDomainsJSON{Domains: domains}); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, HeldDomainsFile)); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}
