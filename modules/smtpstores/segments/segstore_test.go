package segments

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpstores/files"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

// TestStore runs the store contract on the default store, on one whose
// bodies above 4 KiB spill to tmp/, and on one that rotates every 16 KiB.
func TestStore(t *testing.T) {
	t.Run("default", func(t *testing.T) { queuetest.RunStoreTests(t, openStore) })
	t.Run("spill", func(t *testing.T) {
		queuetest.RunStoreTests(t, func(dir string) (queue.Store, error) { return open(dir, segLimit, 4096) })
	})
	t.Run("rotate", func(t *testing.T) {
		queuetest.RunStoreTests(t, func(dir string) (queue.Store, error) { return open(dir, 16<<10, 2048) })
	})
}

// TestQueue runs the queue scenarios on segment stores.
func TestQueue(t *testing.T) { queuetest.RunQueueTests(t, openStore) }

func openStore(dir string) (queue.Store, error) { return Open(dir) }

func openSeg(t *testing.T, dir string, limit int64, mem int) *Store {
	t.Helper()
	s, err := open(dir, limit, mem)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConcurrentCommitsShareSyncs(t *testing.T) {
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
			queuetest.Commit(t, s, id, queuetest.BodyFor(id, 2000+i), "a@example.test")
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
	got := queuetest.Load(t, s)
	if len(got) != 50 {
		t.Fatalf("loaded %d", len(got))
	}
	for i := 0; i < 50; i++ {
		id := fmt.Sprintf("C%02d", i)
		if !bytes.Equal(queuetest.Body(t, s, id), queuetest.BodyFor(id, 2000+i)) {
			t.Fatalf("%s body differs", id)
		}
	}
}

// TestSaveOfRemovedMessageFails: a segment store knows which messages it
// holds (the files store would write a new envelope).
func TestSaveOfRemovedMessageFails(t *testing.T) {
	s := openSeg(t, t.TempDir(), segLimit, segMemBody)
	defer s.Close()
	queuetest.Commit(t, s, "GONE", queuetest.BodyFor("GONE", 500), "c@example.test")
	if err := s.Remove("GONE"); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&queue.Message{ID: "GONE"}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("save of a removed message: %v", err)
	}
}

// abcSegment commits messages A, B and C of 1000 bytes each to a new
// store in dir, closes it and returns the one segment they are in.
func abcSegment(t *testing.T, dir string) string {
	t.Helper()
	s := openSeg(t, dir, segLimit, segMemBody)
	for _, id := range []string{"A", "B", "C"} {
		queuetest.Commit(t, s, id, queuetest.BodyFor(id, 1000), "a@example.test")
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "segments", "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments: %v", segs)
	}
	return segs[0]
}

func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	seg := abcSegment(t, dir)
	st, _ := os.Stat(seg)
	if err := os.Truncate(seg, st.Size()-300); err != nil { // mid-body of C
		t.Fatal(err)
	}
	s := openSeg(t, dir, segLimit, segMemBody)
	got := queuetest.Load(t, s)
	if len(got) != 2 || got["A"] == nil || got["B"] == nil {
		t.Fatalf("loaded %v", got)
	}
	// The torn tail is cut off, so new records follow good ones.
	queuetest.Commit(t, s, "D", queuetest.BodyFor("D", 1000), "a@example.test")
	s.Close()
	s = openSeg(t, dir, segLimit, segMemBody)
	defer s.Close()
	got = queuetest.Load(t, s)
	if len(got) != 3 || got["D"] == nil || !bytes.Equal(queuetest.Body(t, s, "D"), queuetest.BodyFor("D", 1000)) {
		t.Fatalf("after append: %v", got)
	}
}

func TestCorruptRecordEndsLastSegment(t *testing.T) {
	dir := t.TempDir()
	seg := abcSegment(t, dir)
	data, _ := os.ReadFile(seg)
	i := bytes.Index(data, []byte("B line 0"))
	if i < 0 {
		t.Fatal("body of B not found")
	}
	i += 500
	data[i] ^= 0x20 // one flipped bit in the middle of B's body
	os.WriteFile(seg, data, 0o600)
	s := openSeg(t, dir, segLimit, segMemBody)
	defer s.Close()
	got := queuetest.Load(t, s)
	if len(got) != 1 || got["A"] == nil {
		t.Fatalf("loaded %v", got)
	}
	if st, _ := os.Stat(seg); st.Size() >= int64(i) {
		t.Fatalf("segment not truncated before the corrupt record: %d", st.Size())
	}
}

func TestRotationAndCompaction(t *testing.T) {
	dir := t.TempDir()
	const limit = 16 << 10
	// Bodies above 3000 bytes go to files of their own: a mix of both.
	const mem = 3000
	s := openSeg(t, dir, limit, mem)
	setSettle(s, 0)
	want := make(map[string][32]byte)
	var ids []string
	for i := 0; i < 60; i++ {
		id := fmt.Sprintf("R%02d", i)
		b := queuetest.BodyFor(id, 1500+i*37)
		queuetest.Commit(t, s, id, b, "a@example.test")
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
	// Deliver everything except two early (long-deferred) messages and a
	// later one with its body in a file, and save a new state for one.
	pinned := []string{"R01", "R07", "R50"}
	m := queuetest.Load(t, s)["R07"]
	m.Attempts = 9
	if err := s.Save(m); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if slices.Contains(pinned, id) {
			continue
		}
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
		delete(want, id)
	}
	// Compaction runs in the background, kicked by Remove.
	testutil.Eventually(t, 10*time.Second, "compaction", func() bool { return countSegs() <= 2 })
	after := countSegs()
	if files, _ := os.ReadDir(filepath.Join(dir, "bodies")); len(files) != 1 {
		t.Fatalf("body files left: %v", files)
	}
	check := func(s *Store) {
		t.Helper()
		got := queuetest.Load(t, s)
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
			if sha256.Sum256(queuetest.Body(t, s, id)) != h {
				t.Fatalf("%s: body changed by the copy", id)
			}
		}
	}
	check(s)
	s.Close()
	s = openSeg(t, dir, limit, mem)
	defer s.Close()
	check(s)
	t.Logf("segments: %d before, %d after", before, after)
}

// setSettle sets how long rotated segments settle before compaction
// copies their live messages forward.
func setSettle(s *Store, d time.Duration) {
	s.mu.Lock()
	s.settle = d
	s.mu.Unlock()
	s.kickCompactor()
}

// TestCompactionWaitsForInFlightMessages: the live messages of a segment
// that was just rotated are being delivered, so compaction leaves them
// (and the segment) alone until they have settled; then it copies the
// ones still there forward and deletes the segment, in the background.
func TestCompactionWaitsForInFlightMessages(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 16<<10, 2048)
	defer s.Close()
	ids := commitNumbered(t, s, 20)
	segsOf := func() int {
		segs, _ := filepath.Glob(filepath.Join(dir, "segments", "*.seg"))
		return len(segs)
	}
	if segsOf() < 2 {
		t.Fatal("no rotation")
	}
	// Everything but the first message is delivered: it pins the
	// oldest segment.
	for _, id := range ids[1:] {
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	oldest := s.segs[0]
	passes := s.compactions
	s.mu.Unlock()
	s.kickCompactor()
	testutil.Eventually(t, 10*time.Second, "a compaction pass", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.compactions > passes
	})
	s.mu.Lock()
	stillThere := s.segs[0] == oldest && s.index["F00"].seg == oldest
	s.mu.Unlock()
	if !stillThere {
		t.Fatal("an unsettled message was copied forward")
	}
	setSettle(s, 0)
	testutil.Eventually(t, 10*time.Second, "the settled segment's deletion", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.segs[0] != oldest && s.index["F00"].seg != oldest
	})
	if _, err := os.Stat(oldest.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old segment kept: %v", err)
	}
	if !bytes.Equal(queuetest.Body(t, s, "F00"), queuetest.BodyFor("F00", 1500)) {
		t.Fatal("body changed by the copy")
	}
}

// TestFailedCopyForwardKeepsOriginal: when the sync after copying live
// messages forward fails, the copies are cut off and the index points at
// the originals again, which stay readable.
func TestFailedCopyForwardKeepsOriginal(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 16<<10, 2048)
	defer s.Close()
	ids := commitNumbered(t, s, 20)
	for _, id := range ids[1:] {
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	// A live message in the active segment: compaction does not rotate
	// first, it copies F00 forward into this segment.
	queuetest.Commit(t, s, "LIVE", queuetest.BodyFor("LIVE", 1500), "a@example.test")
	defer failSegmentSyncs(s)()
	s.mu.Lock()
	oldest := s.segs[0]
	err := s.compact(time.Now().Add(time.Hour))
	onOldest := s.index["F00"] != nil && s.index["F00"].seg == oldest
	s.mu.Unlock()
	if err == nil {
		t.Fatal("a compaction whose sync failed succeeded")
	}
	if !onOldest {
		t.Fatal("after the failed sync the index does not point at the original any more")
	}
	if _, err := os.Stat(oldest.path); err != nil {
		t.Fatalf("the original's segment: %v", err)
	}
	if m, err := s.LoadMessage("F00"); err != nil || m.ID != "F00" {
		t.Fatalf("envelope after the failed copy: %v", err)
	}
	if !bytes.Equal(queuetest.Body(t, s, "F00"), queuetest.BodyFor("F00", 1500)) {
		t.Fatal("body changed after the failed copy")
	}
}

func TestBodyOutlivesSegment(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 4096, 2048)
	defer s.Close()
	queuetest.Commit(t, s, "OLD", queuetest.BodyFor("OLD", 3000), "a@example.test")
	r, err := s.OpenBody("OLD")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	queuetest.Commit(t, s, "NEW", queuetest.BodyFor("NEW", 3000), "a@example.test") // rotates
	if err := s.Remove("OLD"); err != nil {                                         // deletes the first segment
		t.Fatal(err)
	}
	if b, err := io.ReadAll(r); err != nil || !bytes.Equal(b, queuetest.BodyFor("OLD", 3000)) {
		t.Fatalf("open body after deletion: %d bytes, %v", len(b), err)
	}
}

// TestActiveSegmentReader: a body read through the active segment's own
// file (no open per delivery) reads whole across a rotation and the
// deletion of its segment, and the segment's file is closed once the
// reader is.
func TestActiveSegmentReader(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 4096, 4096)
	defer s.Close()
	queuetest.Commit(t, s, "OLD", queuetest.BodyFor("OLD", 2500), "a@example.test")
	s.mu.Lock()
	first := s.index["OLD"].seg
	s.mu.Unlock()
	r, err := s.OpenBody("OLD")
	if err != nil {
		t.Fatal(err)
	}
	queuetest.Commit(t, s, "NEW", queuetest.BodyFor("NEW", 2500), "a@example.test") // rotates
	s.mu.Lock()
	rotated := s.active() != first
	s.mu.Unlock()
	if !rotated {
		t.Fatal("the second commit did not rotate")
	}
	if err := s.Remove("OLD"); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	cerr := s.compact(time.Now().Add(time.Hour)) // settled: the first segment goes
	s.mu.Unlock()
	if cerr != nil {
		t.Fatal(cerr)
	}
	if _, err := os.Stat(first.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("first segment still there: %v", err)
	}
	if n := openFiles(t, first.path); n != 1 {
		t.Fatalf("%d open files for the rotated segment while its reader is open, want 1", n)
	}
	if b, err := io.ReadAll(r); err != nil || !bytes.Equal(b, queuetest.BodyFor("OLD", 2500)) {
		t.Fatalf("body read across rotation and deletion: %d bytes, %v", len(b), err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFiles(t, first.path); n != 0 {
		t.Fatalf("%d open files for the rotated segment after its reader closed, want 0", n)
	}
	if !bytes.Equal(queuetest.Body(t, s, "NEW"), queuetest.BodyFor("NEW", 2500)) {
		t.Fatal("body in the active segment changed")
	}
}

// openFiles counts this process's open files for path (deleted or not).
func openFiles(t *testing.T, path string) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("open files are counted in /proc/self/fd, which only Linux has")
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil &&
			strings.TrimSuffix(target, " (deleted)") == path {
			n++
		}
	}
	return n
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, segLimit, segMemBody)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
	if _, err := files.Open(dir); err == nil {
		t.Fatal("a files store opened a spool held by a segment store")
	}
	s.Close()
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}

// TestSpace runs the free-space scenario: done records are written from
// the reserve while new messages are refused.
func TestSpace(t *testing.T) {
	queuetest.RunSpaceTests(t, func(dir string, minFree int64) (queue.Store, error) {
		return OpenWith(dir, Options{MinFree: minFree})
	})
}

// TestHugeLengthsInHeader: a record header whose body length is close to
// 2^63 must not make the envelope length pass the bounds check by wrapping
// the sum around (which made scan allocate the 4 GiB envelope it claims).
func TestHugeLengthsInHeader(t *testing.T) {
	dir := t.TempDir()
	hdr := make([]byte, segHdrLen)
	binary.BigEndian.PutUint32(hdr, segMagic)
	hdr[4], hdr[5] = segTypeMsg, 2
	binary.BigEndian.PutUint32(hdr[6:], 0xffffffff)
	binary.BigEndian.PutUint64(hdr[10:], 1<<63-16)
	if err := os.MkdirAll(filepath.Join(dir, "segments"), 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "segments", "0000000000000001.seg")
	if err := os.WriteFile(path, append(hdr, "M3 and then some"...), 0o600); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s := openSeg(t, dir, segLimit, segMemBody)
	defer s.Close()
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
		t.Fatalf("opening a 34 byte segment allocated %d bytes", n)
	}
	if msgs := queuetest.Load(t, s); len(msgs) != 0 {
		t.Fatalf("loaded %v", msgs)
	}
	if st, err := os.Stat(path); err != nil || st.Size() != 0 {
		t.Fatalf("bad record not cut off: %v, %v", st.Size(), err)
	}
}

// TestFailedRotationInCopyForwardKeepsOriginal: the copy of the first live
// message lands in the active segment; the second does not fit, so the
// append rotates, and the rotation's sync fails, cutting the first copy
// off: the index must point at the original again.
func TestFailedRotationInCopyForwardKeepsOriginal(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 8192, 4096)
	defer s.Close()
	queuetest.Commit(t, s, "K0", queuetest.BodyFor("K0", 1500), "a@example.test")
	s.mu.Lock()
	rec := s.off
	s.mu.Unlock()
	queuetest.Commit(t, s, "K1", queuetest.BodyFor("K1", 1500), "a@example.test")
	// Fill until the next record rotates.
	for i := 0; ; i++ {
		s.mu.Lock()
		full := s.off+rec > s.limit
		s.mu.Unlock()
		if full {
			break
		}
		queuetest.Commit(t, s, fmt.Sprintf("P%d", i), queuetest.BodyFor("P", 1500), "a@example.test")
	}
	queuetest.Commit(t, s, "N0", queuetest.BodyFor("N0", 1500), "a@example.test") // rotates: seg2
	// seg2 needs room for exactly one more record.
	for i := 0; ; i++ {
		s.mu.Lock()
		room := s.limit - s.off
		s.mu.Unlock()
		if room < 2*rec {
			if room < rec {
				t.Fatal("no room for one more record: the layout this test builds changed")
			}
			break
		}
		queuetest.Commit(t, s, fmt.Sprintf("Q%d", i), queuetest.BodyFor("Q", 1500), "a@example.test")
	}
	s.mu.Lock()
	old := s.segs[0]
	s.mu.Unlock()
	restore := failSegmentSyncs(s)
	s.mu.Lock()
	err := s.copyForward(old)
	e := s.index["K0"]
	onOld := e.seg == old
	s.mu.Unlock()
	if err == nil || !onOld {
		t.Fatalf("copyForward: %v; K0 on the original: %v (want an error, and the original)", err, onOld)
	}
	restore()
	r, oerr := s.OpenBody("K0")
	if oerr != nil {
		t.Fatalf("open K0: %v", oerr)
	}
	b, rerr := io.ReadAll(r)
	r.Close()
	if rerr != nil || len(b) != len(queuetest.BodyFor("K0", 1500)) {
		t.Fatalf("K0 after a failed rotate inside copyForward: %d bytes, %v", len(b), rerr)
	}
	if _, lerr := s.LoadMessage("K0"); lerr != nil {
		t.Fatalf("K0 envelope: %v", lerr)
	}
}

// failSegmentSyncs makes every sync of a segment file of s fail (EIO), as
// a failing disk would, until the returned function is called.
func failSegmentSyncs(s *Store) (restore func()) {
	fsync := s.fsync
	s.fsync = func(f *os.File) error {
		if strings.HasSuffix(f.Name(), ".seg") {
			return errors.New("injected EIO")
		}
		return fsync(f)
	}
	return func() { s.fsync = fsync }
}

// commitNumbered commits n messages F00, F01, ... of 1500 bytes each and
// returns their ids.
func commitNumbered(t *testing.T, s *Store, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("F%02d", i)
		queuetest.Commit(t, s, id, queuetest.BodyFor(id, 1500), "a@example.test")
		ids = append(ids, id)
	}
	return ids
}
