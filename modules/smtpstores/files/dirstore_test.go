package files

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

func TestSpoolLockAndCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s1, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open of a locked spool: %v", err)
	}
	// A body without envelope (crash between the renames), a leftover in
	// tmp/, and an unreadable envelope.
	os.WriteFile(filepath.Join(dir, "msg", "ORPHAN.eml"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "tmp", "HALF.eml"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "msg", "BROKEN.json"), []byte("{not json"), 0o600)
	os.WriteFile(filepath.Join(dir, "msg", "BROKEN.eml"), []byte("x"), 0o600)
	s1.Close()
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	msgs, err := s2.Load()
	if err == nil || !strings.Contains(err.Error(), "BROKEN") {
		t.Fatalf("unreadable envelope not reported: %v", err)
	}
	if len(msgs) != 0 {
		t.Fatalf("loaded %d messages", len(msgs))
	}
	for _, p := range []string{"msg/ORPHAN.eml", "tmp/HALF.eml", "msg/BROKEN.json"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s still there", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "corrupt", "BROKEN.json")); err != nil {
		t.Errorf("unreadable envelope not kept in corrupt/: %v", err)
	}
}

func openStore(dir string) (queue.Store, error) { return Open(dir) }

func TestStore(t *testing.T) { queuetest.RunStoreTests(t, openStore) }

// TestQueue runs the queue scenarios on files stores.
func TestQueue(t *testing.T) { queuetest.RunQueueTests(t, openStore) }

// TestSpace runs the free-space scenario on the files store.
func TestSpace(t *testing.T) {
	queuetest.RunSpaceTests(t, func(dir string, minFree int64) (queue.Store, error) {
		return OpenWith(dir, Options{MinFree: minFree})
	})
}
