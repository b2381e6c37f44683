package queue

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func segCommit(t *testing.T, s Store, id string, body []byte, rcpts ...string) {
	t.Helper()
	w, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	// Several writes, as the SMTP server does.
	for len(body) > 0 {
		n := min(len(body), 1000)
		if _, err := w.Write(body[:n]); err != nil {
			t.Fatal(err)
		}
		body = body[n:]
	}
	m := &Message{From: "s@sender.test", Arrived: time.Now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, &Recipient{Addr: r})
	}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
}

func segBodyOf(t *testing.T, s Store, id string) []byte {
	t.Helper()
	r, err := s.OpenBody(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func segLoad(t *testing.T, s Store) map[string]*Message {
	t.Helper()
	msgs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*Message)
	for _, m := range msgs {
		out[m.ID] = m
	}
	return out
}

func bodyFor(id string, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "%s line %d\r\n", id, b.Len())
	}
	return b.Bytes()[:n]
}

func openSeg(t *testing.T, dir string, limit int64, mem int) *SegmentStore {
	t.Helper()
	s, err := openSegmentStore(dir, limit, mem)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSegmentStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, 4096)
	bodies := map[string][]byte{"SMALL": bodyFor("SMALL", 300), "EMPTY": nil, "BIG": bodyFor("BIG", 100_000)}
	for id, b := range bodies {
		segCommit(t, s, id, b, "a@example.test")
	}
	w, _ := s.Create("ABORTED")
	w.Write(bodyFor("x", 10000))
	w.Abort()
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("spill files left: %v", left)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openSeg(t, dir, segLimit, 4096)
	defer s.Close()
	got := segLoad(t, s)
	if len(got) != len(bodies) {
		t.Fatalf("loaded %d messages", len(got))
	}
	for id, b := range bodies {
		m := got[id]
		if m == nil || m.Size != int64(len(b)) || m.From != "s@sender.test" || len(m.Recipients) != 1 {
			t.Fatalf("%s: %+v", id, m)
		}
		if rb := segBodyOf(t, s, id); !bytes.Equal(rb, b) {
			t.Fatalf("%s: body of %d bytes differs (%d)", id, len(b), len(rb))
		}
	}
}

func TestSegmentStoreConcurrentCommitsShareSyncs(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, segMemBody)
	var syncs atomic.Int64
	inner := s.fsync
	s.fsync = func(f *os.File) error {
		syncs.Add(1)
		time.Sleep(2 * time.Millisecond) // a disk, not tmpfs
		return inner(f)
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("C%02d", i)
			segCommit(t, s, id, bodyFor(id, 2000+i), "a@example.test")
		}()
	}
	wg.Wait()
	if n := syncs.Load(); n < 1 || n > 25 {
		t.Fatalf("%d fsyncs for 50 commits", n)
	}
	t.Logf("%d fsyncs for 50 concurrent commits", syncs.Load())
	s.Close()
	s = openSeg(t, dir, segLimit, segMemBody)
	defer s.Close()
	got := segLoad(t, s)
	if len(got) != 50 {
		t.Fatalf("loaded %d", len(got))
	}
	for i := 0; i < 50; i++ {
		id := fmt.Sprintf("C%02d", i)
		if !bytes.Equal(segBodyOf(t, s, id), bodyFor(id, 2000+i)) {
			t.Fatalf("%s body differs", id)
		}
	}
}

func TestSegmentStoreSaveAndRemove(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, segMemBody)
	segCommit(t, s, "KEEP", bodyFor("KEEP", 500), "a@example.test", "b@example.test")
	segCommit(t, s, "GONE", bodyFor("GONE", 500), "c@example.test")
	m := segLoad(t, s)["KEEP"]
	m.Attempts = 3
	m.Recipients[0].Status = Delivered
	m.Held = true
	if err := s.Save(m); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("GONE"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenBody("GONE"); err == nil {
		t.Fatal("body of a removed message opens")
	}
	if err := s.Save(&Message{ID: "GONE"}); err == nil {
		t.Fatal("save of a removed message succeeded")
	}
	s.Close()
	s = openSeg(t, dir, segLimit, segMemBody)
	defer s.Close()
	got := segLoad(t, s)
	if len(got) != 1 || got["GONE"] != nil {
		t.Fatalf("loaded %v", got)
	}
	k := got["KEEP"]
	if k.Attempts != 3 || !k.Held || k.Recipients[0].Status != Delivered || k.Recipients[1].Status != Pending {
		t.Fatalf("saved state lost: %+v", k)
	}
	if !bytes.Equal(segBodyOf(t, s, "KEEP"), bodyFor("KEEP", 500)) {
		t.Fatal("body differs after save")
	}
}

func onlySegment(t *testing.T, dir string) string {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "segments", "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments: %v", segs)
	}
	return segs[0]
}

func TestSegmentStoreTornTail(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, segMemBody)
	for _, id := range []string{"A", "B", "C"} {
		segCommit(t, s, id, bodyFor(id, 1000), "a@example.test")
	}
	s.Close()
	seg := onlySegment(t, dir)
	st, _ := os.Stat(seg)
	if err := os.Truncate(seg, st.Size()-300); err != nil { // mid-body of C
		t.Fatal(err)
	}
	s = openSeg(t, dir, segLimit, segMemBody)
	got := segLoad(t, s)
	if len(got) != 2 || got["A"] == nil || got["B"] == nil {
		t.Fatalf("loaded %v", got)
	}
	// The torn tail is cut off, so new records follow good ones.
	segCommit(t, s, "D", bodyFor("D", 1000), "a@example.test")
	s.Close()
	s = openSeg(t, dir, segLimit, segMemBody)
	defer s.Close()
	got = segLoad(t, s)
	if len(got) != 3 || got["D"] == nil || !bytes.Equal(segBodyOf(t, s, "D"), bodyFor("D", 1000)) {
		t.Fatalf("after append: %v", got)
	}
}

func TestSegmentStoreCorruptRecordEndsLastSegment(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, segMemBody)
	for _, id := range []string{"A", "B", "C"} {
		segCommit(t, s, id, bodyFor(id, 1000), "a@example.test")
	}
	s.Close()
	seg := onlySegment(t, dir)
	data, _ := os.ReadFile(seg)
	i := bytes.Index(data, []byte("B line 0"))
	if i < 0 {
		t.Fatal("body of B not found")
	}
	i += 500
	data[i] ^= 0x20 // one flipped bit in the middle of B's body
	os.WriteFile(seg, data, 0o600)
	s = openSeg(t, dir, segLimit, segMemBody)
	defer s.Close()
	got := segLoad(t, s)
	if len(got) != 1 || got["A"] == nil {
		t.Fatalf("loaded %v", got)
	}
	if st, _ := os.Stat(seg); st.Size() >= int64(i) {
		t.Fatalf("segment not truncated before the corrupt record: %d", st.Size())
	}
}

func TestSegmentStoreRotationAndCompaction(t *testing.T) {
	dir := t.TempDir()
	const limit = 16 << 10
	s := openSeg(t, dir, limit, 2048) // bodies above 2 KiB go through tmp/
	want := make(map[string][32]byte)
	var ids []string
	for i := 0; i < 60; i++ {
		id := fmt.Sprintf("R%02d", i)
		b := bodyFor(id, 1500+i*37)
		segCommit(t, s, id, b, "a@example.test")
		want[id] = sha256.Sum256(b)
		ids = append(ids, id)
	}
	countSegs := func() int {
		segs, _ := filepath.Glob(filepath.Join(dir, "segments", "*.seg"))
		return len(segs)
	}
	before := countSegs()
	if before < 5 {
		t.Fatalf("only %d segments for ~200 KiB at 16 KiB", before)
	}
	// Deliver everything except two early (long-deferred) messages, and
	// save a new state for one of them.
	pinned := []string{"R01", "R07"}
	m := segLoad(t, s)["R07"]
	m.Attempts = 9
	if err := s.Save(m); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if id == pinned[0] || id == pinned[1] {
			continue
		}
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
		delete(want, id)
	}
	after := countSegs()
	if after > 2 {
		t.Fatalf("%d segments left of %d", after, before)
	}
	check := func(s *SegmentStore) {
		t.Helper()
		got := segLoad(t, s)
		var gotIDs []string
		for id := range got {
			gotIDs = append(gotIDs, id)
		}
		sort.Strings(gotIDs)
		if strings.Join(gotIDs, ",") != strings.Join(pinned, ",") {
			t.Fatalf("live: %v", gotIDs)
		}
		if got["R07"].Attempts != 9 {
			t.Fatalf("latest envelope lost in the copy: %+v", got["R07"])
		}
		for id, h := range want {
			if sha256.Sum256(segBodyOf(t, s, id)) != h {
				t.Fatalf("%s: body changed by the copy", id)
			}
		}
	}
	check(s)
	s.Close()
	s = openSeg(t, dir, limit, 2048)
	defer s.Close()
	check(s)
	t.Logf("segments: %d before, %d after", before, after)
}

func TestSegmentStoreBodyOutlivesSegment(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 4096, 2048)
	defer s.Close()
	segCommit(t, s, "OLD", bodyFor("OLD", 3000), "a@example.test")
	r, err := s.OpenBody("OLD")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	segCommit(t, s, "NEW", bodyFor("NEW", 3000), "a@example.test") // rotates
	if err := s.Remove("OLD"); err != nil {                        // deletes the first segment
		t.Fatal(err)
	}
	if b, err := io.ReadAll(r); err != nil || !bytes.Equal(b, bodyFor("OLD", 3000)) {
		t.Fatalf("open body after deletion: %d bytes, %v", len(b), err)
	}
}

func TestSegmentStoreLock(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, segMemBody)
	if _, err := OpenSegmentStore(dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
	if _, err := OpenDirStore(dir); err == nil {
		t.Fatal("a DirStore opened a spool held by a SegmentStore")
	}
	s.Close()
	s2, err := OpenSegmentStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}

func TestSegmentStoreHeldDomains(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, segMemBody)
	if d, err := s.LoadHeldDomains(); err != nil || d != nil {
		t.Fatalf("%v %v", d, err)
	}
	if err := s.SaveHeldDomains([]string{"example.test"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openSeg(t, dir, segLimit, segMemBody)
	defer s.Close()
	if d, err := s.LoadHeldDomains(); err != nil || len(d) != 1 || d[0] != "example.test" {
		t.Fatalf("%v %v", d, err)
	}
}

func TestSegmentStoreConcurrentCommitsAcrossRotations(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 16<<10, 2048)
	var wg sync.WaitGroup
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				id := fmt.Sprintf("G%02dM%02d", g, i)
				segCommit(t, s, id, bodyFor(id, 1000+g*100), "a@example.test")
				if i%2 == 1 {
					if err := s.Remove(id); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	s.Close()
	s = openSeg(t, dir, 16<<10, 2048)
	defer s.Close()
	got := segLoad(t, s)
	if len(got) != 100 {
		t.Fatalf("loaded %d, want 100", len(got))
	}
	for id := range got {
		var g, i int
		fmt.Sscanf(id, "G%02dM%02d", &g, &i)
		if !bytes.Equal(segBodyOf(t, s, id), bodyFor(id, 1000+g*100)) {
			t.Fatalf("%s body differs", id)
		}
	}
}
