package spoolfs

import (
	"path/filepath"
	"sync"
	"testing"
)

func TestDirSyncConcurrent(t *testing.T) {
	d := NewDirSync(t.TempDir())
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Sync(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if d.started > 50 || d.done != d.started {
		t.Fatalf("started %d, done %d", d.started, d.done)
	}
	bad := NewDirSync(filepath.Join(t.TempDir(), "missing"))
	if err := bad.Sync(); err == nil {
		t.Fatal("sync of a missing directory succeeded")
	}
}
