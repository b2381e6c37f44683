package spoolfs

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	l, err := Lock(dir, "msg")
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"tmp", "msg"} {
		if st, err := os.Stat(filepath.Join(dir, sub)); err != nil || !st.IsDir() {
			t.Fatalf("%s: %v", sub, err)
		}
	}
	if _, err := Lock(dir, "segments"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second lock, other format: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "tmp", "HALF.eml"), []byte("x"), 0o600)
	l.Close()
	l, err = Lock(dir, "msg")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("tmp/ not cleared: %v", left)
	}
}

func TestRefuseOtherFormat(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "segments"), 0o700)
	seg := filepath.Join(dir, "segments", "0000000000000001.seg")
	os.WriteFile(seg, nil, 0o600)
	if err := RefuseOtherFormat(dir, "files", "segments/*.seg"); err != nil {
		t.Fatalf("empty segment refused: %v", err)
	}
	os.WriteFile(seg, []byte("x"), 0o600)
	want := `queue store "files": spool ` + dir + " still holds messages in the other format (" + seg + ")"
	if err := RefuseOtherFormat(dir, "files", "segments/*.seg"); err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestHeldDomains(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "tmp"), 0o700)
	if d, err := LoadHeldDomains(dir); err != nil || d != nil {
		t.Fatalf("none saved: %v, %v", d, err)
	}
	if err := SaveHeldDomains(dir, []string{"a.test", "b.test"}); err != nil {
		t.Fatal(err)
	}
	if d, err := LoadHeldDomains(dir); err != nil || !reflect.DeepEqual(d, []string{"a.test", "b.test"}) {
		t.Fatalf("%v, %v", d, err)
	}
	if err := SaveHeldDomains(dir, nil); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, HeldDomainsFile))
	if string(raw) != `{"domains":[]}` {
		t.Fatalf("file %q", raw)
	}
	os.WriteFile(filepath.Join(dir, HeldDomainsFile), []byte("{"), 0o600)
	if _, err := LoadHeldDomains(dir); err == nil || !strings.HasPrefix(err.Error(), HeldDomainsFile) {
		t.Fatalf("broken file: %v", err)
	}
}
