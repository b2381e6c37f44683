package segments

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

// loadIndex collects what LoadIndex gives.
func loadIndex(t *testing.T, s *Store) map[string]queue.Index {
	t.Helper()
	out := make(map[string]queue.Index)
	if err := s.LoadIndex(func(x queue.Index) { out[x.ID] = x }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEnvelopesOnDemand: the index keeps where the latest envelope is,
// LoadMessage reads it back (after a Save, a restart, in a file record),
// and LoadIndex says what the envelope says, from scan's parse the first
// time and from the segment after that.
func TestEnvelopesOnDemand(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 16<<10, 2048)
	queuetest.Commit(t, s, "E1", queuetest.BodyFor("E1", 1000), "a@one.test", "b@two.test")
	queuetest.Commit(t, s, "E2", queuetest.BodyFor("E2", 5000), "c@three.test") // a body file
	m, err := s.LoadMessage("E1")
	if err != nil {
		t.Fatal(err)
	}
	m.Recipients[0].Status = queue.Delivered
	m.Attempts, m.Held = 2, true
	if err := s.Save(m); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store) {
		t.Helper()
		for _, id := range []string{"E1", "E2"} {
			got, err := s.LoadMessage(id)
			if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			if id == "E1" && (got.Attempts != 2 || !got.Held || got.Recipients[0].Status != queue.Delivered) {
				t.Fatalf("E1: not the saved state: %+v", got)
			}
		}
		for pass := range 2 { // scan's parse, then read back
			idx := loadIndex(t, s)
			if len(idx) != 2 {
				t.Fatalf("pass %d: index %v", pass, idx)
			}
			for id, x := range idx {
				m, _ := s.LoadMessage(id)
				if want := queue.IndexOf(m); !reflect.DeepEqual(x, want) {
					t.Fatalf("pass %d: %s: index %+v, envelope says %+v", pass, id, x, want)
				}
			}
			if got := strings.Join(idx["E1"].Domains, ","); got != "two.test" {
				t.Fatalf("E1 pending domains: %q", got)
			}
		}
	}
	check(s)
	s.Close()
	s = openSeg(t, dir, 16<<10, 2048)
	defer s.Close()
	s.mu.Lock()
	parsed := s.index["E1"].idx != nil && s.index["E2"].idx != nil
	s.mu.Unlock()
	if !parsed {
		t.Fatal("scan did not parse the index entries")
	}
	check(s)
	s.mu.Lock()
	kept := s.index["E1"].idx != nil
	s.mu.Unlock()
	if kept {
		t.Fatal("the index entry stayed in the store after LoadIndex")
	}
	if _, err := s.LoadMessage("NONE"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unknown message: %v", err)
	}
}

// flipEnvByte changes one byte of the envelope of id's latest record in
// its segment file, under the open store.
func flipEnvByte(t *testing.T, s *Store, id string) {
	t.Helper()
	s.mu.Lock()
	rec := s.index[id].env
	s.mu.Unlock()
	f, err := os.OpenFile(rec.seg.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at := rec.off + segHdrLen + int64(len(id)) + int64(rec.envLen)/2
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// TestEnvelopeChecksum: an envelope damaged on disk after Open is
// refused when it is read back (msg, env and file records), not decoded.
func TestEnvelopeChecksum(t *testing.T) {
	s := openSeg(t, t.TempDir(), segLimit, 2048)
	defer s.Close()
	queuetest.Commit(t, s, "MSG", queuetest.BodyFor("MSG", 1000), "a@example.test")
	queuetest.Commit(t, s, "ENV", queuetest.BodyFor("ENV", 1000), "a@example.test")
	queuetest.Commit(t, s, "FILE", queuetest.BodyFor("FILE", 4000), "a@example.test")
	m, _ := s.LoadMessage("ENV")
	m.Attempts = 1
	if err := s.Save(m); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"MSG", "ENV", "FILE"} {
		if _, err := s.LoadMessage(id); err != nil {
			t.Fatalf("%s before the damage: %v", id, err)
		}
		flipEnvByte(t, s, id)
		if m, err := s.LoadMessage(id); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
			t.Fatalf("%s: damaged envelope read as %+v, %v", id, m, err)
		}
	}
	msgs, err := s.Load()
	if len(msgs) != 0 || err == nil || !strings.Contains(err.Error(), "skipped 3 messages") {
		t.Fatalf("Load of damaged envelopes: %d messages, %v", len(msgs), err)
	}
}

// TestEnvelopeReadDuringCompaction: a segment that compaction copies
// forward and deletes while an envelope is being read from it: the read
// still gets the envelope (the descriptor was opened under the lock),
// and the next read finds the copy.
func TestEnvelopeReadDuringCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openSeg(t, dir, 16<<10, 2048)
	defer s.Close()
	setSettle(s, 0)
	queuetest.Commit(t, s, "PIN", queuetest.BodyFor("PIN", 1500), "a@example.test")
	m, _ := s.LoadMessage("PIN")
	m.Attempts = 7
	if err := s.Save(m); err != nil {
		t.Fatal(err)
	}
	var others []string
	for i := range 20 {
		id := fmt.Sprintf("O%02d", i)
		queuetest.Commit(t, s, id, queuetest.BodyFor(id, 1500), "a@example.test")
		others = append(others, id)
	}
	s.mu.Lock()
	oldest := s.index["PIN"].env.seg
	s.mu.Unlock()
	ran := false
	s.envReadHook = func() {
		s.envReadHook = nil
		for _, id := range others {
			if err := s.Remove(id); err != nil {
				t.Error(err)
			}
		}
		s.mu.Lock()
		err := s.compact(time.Now())
		s.mu.Unlock()
		if _, serr := os.Stat(oldest.path); err != nil || !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("compaction did not delete %s: %v, %v", filepath.Base(oldest.path), err, serr)
		}
		ran = true
	}
	got, err := s.LoadMessage("PIN")
	if !ran || err != nil || got.Attempts != 7 {
		t.Fatalf("read across compaction (hook ran: %v): %+v, %v", ran, got, err)
	}
	s.mu.Lock()
	moved := s.index["PIN"].env.seg != oldest
	s.mu.Unlock()
	if got, err := s.LoadMessage("PIN"); !moved || err != nil || got.Attempts != 7 {
		t.Fatalf("read of the copy (moved: %v): %+v, %v", moved, got, err)
	}
}

// TestEnvelopeOfRemovedMessage: a read that started before a Remove
// completes with the envelope as it was; reads after it find nothing.
func TestEnvelopeOfRemovedMessage(t *testing.T) {
	s := openSeg(t, t.TempDir(), segLimit, segMemBody)
	defer s.Close()
	queuetest.Commit(t, s, "GONE", queuetest.BodyFor("GONE", 500), "a@example.test")
	s.envReadHook = func() {
		s.envReadHook = nil
		if err := s.Remove("GONE"); err != nil {
			t.Error(err)
		}
	}
	if m, err := s.LoadMessage("GONE"); err != nil || m.ID != "GONE" {
		t.Fatalf("read in flight: %+v, %v", m, err)
	}
	if _, err := s.LoadMessage("GONE"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Remove: %v", err)
	}
	if idx := loadIndex(t, s); len(idx) != 0 {
		t.Fatalf("index after Remove: %v", idx)
	}
}

// TestFailedSaveKeepsLastEnvelope: a Save whose sync fails cuts its record
// off (the spool is in doubt from then on); the message is read back as it
// was last saved, not lost to a record that is no longer there.
func TestFailedSaveKeepsLastEnvelope(t *testing.T) {
	s := openSeg(t, t.TempDir(), segLimit, segMemBody)
	defer s.Close()
	queuetest.Commit(t, s, "KEEP", queuetest.BodyFor("KEEP", 500), "a@example.test")
	m, err := s.LoadMessage("KEEP")
	if err != nil {
		t.Fatal(err)
	}
	m.Attempts = 3
	if err := s.Save(m); err != nil {
		t.Fatal(err)
	}
	defer failSegmentSyncs(s)()
	m.Attempts, m.Held = 4, true
	if err := s.Save(m); err == nil {
		t.Fatal("a Save whose sync failed succeeded")
	}
	got, err := s.LoadMessage("KEEP")
	if err != nil {
		t.Fatalf("the message as last saved is no longer readable: %v", err)
	}
	if got.Attempts != 3 || got.Held {
		t.Fatalf("read back attempts %d, held %t; want the last saved state (3, false)", got.Attempts, got.Held)
	}
}
