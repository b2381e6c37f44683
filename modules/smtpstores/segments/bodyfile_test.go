package segments

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

// The tests of bodies too big to buffer (above 4 KiB here), which go to
// files of their own in bodies/.

const bigMem = 4096

// syncKind names what a sync of the store is about: "body" (a spilled body
// in tmp/), "bodies" (the directory bodies/) or "seg" (a segment).
func syncKind(path string) string {
	switch {
	case strings.HasSuffix(path, ".seg"):
		return "seg"
	case filepath.Base(path) == "bodies":
		return "bodies"
	case filepath.Base(filepath.Dir(path)) == "tmp":
		return "body"
	}
	return path
}

// onSync makes fn run before every sync of s, with what it is about.
func onSync(s *Store, fn func(kind string)) {
	fsync, syncDir := s.fsync, s.syncDir
	s.fsync = func(f *os.File) error {
		fn(syncKind(f.Name()))
		return fsync(f)
	}
	s.syncDir = func(dir string) error {
		fn(syncKind(dir))
		return syncDir(dir)
	}
}

// TestBigCommitDoesNotHoldUpSmallOnes: while a big body is being made
// durable, small messages are committed (before, the big body was copied
// into the segment under the append mutex and flushed with the segment's
// group sync that the small commits wait for).
func TestBigCommitDoesNotHoldUpSmallOnes(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, bigMem)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	onSync(s, func(kind string) {
		if kind == "body" {
			once.Do(func() { close(entered) })
			<-release
		}
	})
	big := queuetest.BodyFor("BIG", 200<<10)
	bigDone := make(chan struct{})
	go func() {
		defer close(bigDone)
		queuetest.Commit(t, s, "BIG", big, "a@example.test")
	}()
	<-entered
	smallDone := make(chan struct{})
	go func() {
		defer close(smallDone)
		for _, id := range []string{"S1", "S2", "S3"} {
			queuetest.Commit(t, s, id, queuetest.BodyFor(id, 1000), "a@example.test")
		}
	}()
	select {
	case <-smallDone:
	case <-time.After(20 * time.Second):
		t.Fatal("small commits wait for the big body's sync")
	}
	close(release)
	<-bigDone
	s.Close()
	s = openSeg(t, dir, segLimit, bigMem)
	defer s.Close()
	if got := queuetest.Load(t, s); len(got) != 4 {
		t.Fatalf("loaded %d messages", len(got))
	}
	if !bytes.Equal(queuetest.Body(t, s, "BIG"), big) {
		t.Fatal("big body differs")
	}
}

// TestBigCommitSyncOrder: the body file and its directory entry are
// durable before the record that names it is written, and the 250 waits
// for the segment's sync.
func TestBigCommitSyncOrder(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, bigMem)
	defer s.Close()
	queuetest.Commit(t, s, "FIRST", queuetest.BodyFor("FIRST", 1000), "a@example.test")
	seg, before := activeEnd(s)
	var events []string
	onSync(s, func(kind string) {
		st, _ := os.Stat(seg)
		grown := "record not written"
		if st.Size() > before {
			grown = "record written"
		}
		events = append(events, kind+" ("+grown+")")
	})
	queuetest.Commit(t, s, "BIG", queuetest.BodyFor("BIG", 100<<10), "a@example.test")
	want := "body (record not written), bodies (record not written), seg (record written)"
	if got := strings.Join(events, ", "); got != want {
		t.Fatalf("syncs: %s\nwant:  %s", got, want)
	}
}

// activeEnd returns the active segment of s and its size on disk.
func activeEnd(s *Store) (string, int64) {
	seg := s.active().path
	st, _ := os.Stat(seg)
	return seg, st.Size()
}

// snapshot copies the spool dir as it is now: what a crash at this point
// leaves, as far as it was written. cut, when not empty, truncates the
// copy of that segment to size (the writes since its last sync are lost).
func snapshot(t *testing.T, dir, cut string, size int64) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if path == cut {
			data = data[:size]
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// entries lists the names in dir/sub.
func entries(t *testing.T, dir, sub string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, sub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// crashState opens a spool left by a crash and checks which messages it
// holds (and their bodies), and that no file is left in tmp/ or bodies/
// but the bodies of those messages.
func crashState(t *testing.T, name, dir string, want map[string][]byte) {
	t.Helper()
	s := openSeg(t, dir, segLimit, bigMem)
	defer s.Close()
	msgs, err := s.Load()
	if err != nil {
		t.Errorf("%s: load: %v", name, err)
	}
	if len(msgs) != len(want) {
		t.Errorf("%s: %d messages, want %d", name, len(msgs), len(want))
	}
	for id, body := range want {
		r, err := s.OpenBody(id)
		if err != nil {
			t.Errorf("%s: %s: %v", name, id, err)
			continue
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(b, body) {
			t.Errorf("%s: %s: body of %d bytes (%v), want %d", name, id, len(b), err, len(body))
		}
	}
	if left := entries(t, dir, "tmp"); len(left) != 0 {
		t.Errorf("%s: left in tmp/: %v", name, left)
	}
	if left := entries(t, dir, "bodies"); len(left) != len(want)-1 {
		t.Errorf("%s: bodies/ holds %v for %d big messages", name, left, len(want)-1)
	}
}

// TestCrashDuringBigCommit: whatever step of a big commit a crash
// interrupts, the spool opens with the message either complete or absent,
// and without files that nothing names.
func TestCrashDuringBigCommit(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, bigMem)
	small := queuetest.BodyFor("SMALL", 1000)
	queuetest.Commit(t, s, "SMALL", small, "a@example.test")
	seg, synced := activeEnd(s)
	snaps := make(map[string]string)
	onSync(s, func(kind string) {
		if _, seen := snaps["record lost"]; seen {
			return // Close's sync
		}
		switch kind {
		case "body", "bodies":
			snaps["at the "+kind+" sync"] = snapshot(t, dir, "", 0)
		case "seg":
			snaps["record written, not synced"] = snapshot(t, dir, "", 0)
			snaps["record lost"] = snapshot(t, dir, seg, synced)
		}
	})
	big := queuetest.BodyFor("BIG", 300<<10)
	queuetest.Commit(t, s, "BIG", big, "a@example.test")
	s.Close()
	if len(snaps) != 4 {
		t.Fatalf("crash points seen: %v", snaps)
	}
	for name, snap := range snaps {
		want := map[string][]byte{"SMALL": small}
		if name == "record written, not synced" {
			want["BIG"] = big
		}
		crashState(t, name, snap, want)
	}
	crashState(t, "after the commit", dir, map[string][]byte{"SMALL": small, "BIG": big})
}

// TestCrashDuringRemove: a big message whose done record is lost in a
// crash comes back with its body; one whose done record survived leaves
// no body file behind.
func TestCrashDuringRemove(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, bigMem)
	small, big := queuetest.BodyFor("SMALL", 1000), queuetest.BodyFor("BIG", 300<<10)
	queuetest.Commit(t, s, "SMALL", small, "a@example.test")
	queuetest.Commit(t, s, "BIG", big, "a@example.test")
	seg, synced := activeEnd(s)
	snaps := make(map[string]string)
	onSync(s, func(kind string) {
		if kind == "seg" && len(snaps) == 0 {
			snaps["done record lost"] = snapshot(t, dir, seg, synced)
			snaps["done record written"] = snapshot(t, dir, "", 0)
		}
	})
	if err := s.Remove("BIG"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if len(snaps) != 2 {
		t.Fatalf("Remove did not wait for a sync of the done record: %v", snaps)
	}
	crashState(t, "done record lost", snaps["done record lost"], map[string][]byte{"SMALL": small, "BIG": big})
	crashState(t, "done record written", snaps["done record written"], map[string][]byte{"SMALL": small})
	crashState(t, "after Remove", dir, map[string][]byte{"SMALL": small})
}

// TestDamagedBodyFile: a missing body file drops its message (reported by
// Load), a changed one fails the read of the body at its end.
func TestDamagedBodyFile(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, bigMem)
	for _, id := range []string{"GONE", "FLIPPED", "GOOD"} {
		queuetest.Commit(t, s, id, queuetest.BodyFor(id, 10<<10), "a@example.test")
	}
	s.Close()
	for _, name := range entries(t, dir, "bodies") {
		path := filepath.Join(dir, "bodies", name)
		switch {
		case strings.HasPrefix(name, "GONE."):
			os.Remove(path)
		case strings.HasPrefix(name, "FLIPPED."):
			data, _ := os.ReadFile(path)
			data[5000] ^= 1
			os.WriteFile(path, data, 0o600)
		}
	}
	s = openSeg(t, dir, segLimit, bigMem)
	defer s.Close()
	msgs, err := s.Load()
	if err == nil || !strings.Contains(err.Error(), "GONE") || len(msgs) != 2 {
		t.Fatalf("load: %d messages, %v", len(msgs), err)
	}
	read := func(id string) error {
		r, err := s.OpenBody(id)
		if err != nil {
			return err
		}
		defer r.Close()
		_, err = io.Copy(io.Discard, r)
		return err
	}
	if err := read("FLIPPED"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("reading a changed body file: %v", err)
	}
	if err := read("GOOD"); err != nil {
		t.Fatal(err)
	}
}

// TestOldSpoolReads: a spool written without file records (a body above
// the memory limit copied into the segment, as before) still loads.
func TestOldSpoolReads(t *testing.T) {
	dir := t.TempDir()
	body := bytes.Repeat([]byte("old body line\r\n"), 30000)
	env := []byte(`{"id":"OLD","from":"a@example.test","rcpts":[{"addr":"b@example.test"}],"arrived":"2026-01-02T03:04:05Z","client":{},"size":450000}`)
	if err := os.MkdirAll(filepath.Join(dir, "segments"), 0o700); err != nil {
		t.Fatal(err)
	}
	rec := fuzzRecord(segTypeMsg, "OLD", env, body)
	if err := os.WriteFile(filepath.Join(dir, "segments", "0000000000000001.seg"), rec, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openSeg(t, dir, segLimit, segMemBody)
	defer s.Close()
	if got := queuetest.Load(t, s); got["OLD"] == nil || got["OLD"].Size != int64(len(body)) {
		t.Fatalf("loaded %v", got)
	}
	if !bytes.Equal(queuetest.Body(t, s, "OLD"), body) {
		t.Fatal("body differs")
	}
}
