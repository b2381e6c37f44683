package testutil

import (
	"os"
	"testing"
)

// StorageDir returns a new directory for a test's Caddy file_system
// storage. Unlike t.TempDir, a failure to remove it at the end is not a
// test failure: CertMagic may still be writing a certificate it began to
// obtain when the test stopped Caddy (it does not wait for that), and the
// directory is then left behind in the system's temporary directory.
func StorageDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "caddy-storage-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
