package segments

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

// FuzzSegmentLoad opens a spool whose only segment holds arbitrary bytes.
// Whatever they are, the store opens (a damaged tail is cut off at the last
// good record), allocates in proportion to the file and not to the lengths
// its headers claim, loads the same messages again when reopened, and then
// stores and reloads a new message (built from the other inputs) unchanged.
func FuzzSegmentLoad(f *testing.F) {
	good := fuzzRecord(segTypeMsg, "M1", []byte(`{"id":"M1","from":"a@b.test","rcpts":[{"addr":"c@d.test"}],"arrived":"2026-01-02T03:04:05Z","client":{},"size":5}`), []byte("hello"))
	env := fuzzRecord(segTypeEnv, "M1", []byte(`{"id":"M1","from":"x@b.test","rcpts":null,"arrived":"0001-01-01T00:00:00Z","client":{},"size":5}`), nil)
	done := fuzzRecord(segTypeEnd, "M1", nil, nil)
	msg := []byte("\x03s@sender.test\x00\x00\x00\x00h\x00mx\x00r@example.test\x01rfc822;r@example.test\x01FAILURE")
	f.Add(good, msg, []byte("body\r\n"))
	f.Add(append(append(good, env...), done...), msg, []byte{})
	f.Add(append(append([]byte(nil), good...), good[:len(good)-3]...), []byte{}, bytes.Repeat([]byte("x"), 5000))
	f.Add(fuzzRecord(segTypeMsg, "BAD", []byte("{not json"), []byte("b")), msg, []byte("b"))
	f.Add(fuzzRecord(segTypeMsg, "M2", []byte(`{"id":"OTHER"}`), nil), msg, []byte("b"))
	// Lengths that overflow when added up.
	huge := make([]byte, segHdrLen)
	binary.BigEndian.PutUint32(huge, segMagic)
	huge[4], huge[5] = segTypeMsg, 2
	binary.BigEndian.PutUint32(huge[6:], 0xffffffff)
	binary.BigEndian.PutUint64(huge[10:], 1<<63-16)
	f.Add(append(huge, "M3........"...), msg, []byte("b"))
	// A file record whose body file is not there.
	ref := &bodyRef{size: 5, crc: crc32.Checksum([]byte("hello"), segCRC), name: 7}
	f.Add(append(append([]byte(nil), good...), fuzzRecord(segTypeFile, "M4", []byte(`{"id":"M4"}`), ref.encode())...), msg, bytes.Repeat([]byte("y"), 6000))

	f.Fuzz(func(t *testing.T, seg, msg, body []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "segments"), 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "segments", "0000000000000001.seg")
		if err := os.WriteFile(path, seg, 0o600); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s, err := openFast(dir)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		first, _ := s.Load()
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20+4*uint64(len(seg)) {
			t.Fatalf("opening a %d byte segment allocated %d bytes", len(seg), n)
		}
		kept, err := os.ReadFile(path)
		if err != nil || !bytes.HasPrefix(seg, kept) {
			t.Fatalf("segment left as %q (%v), not a prefix of %q", kept, err, seg)
		}
		for _, m := range first {
			r, err := s.OpenBody(m.ID)
			if err != nil {
				t.Fatalf("body of %s: %v", m.ID, err)
			}
			if _, err := io.ReadAll(r); err != nil {
				t.Fatalf("body of %s: %v", m.ID, err)
			}
			r.Close()
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = openFast(dir)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		if again, _ := s.Load(); !sameMessages(first, again) {
			t.Fatalf("first open loads %+v, the second %+v", first, again)
		}
		m := queuetest.FuzzMessage(msg)
		s = queuetest.CommitReload(t, openStoreFast, dir, s, "FUZZ-NEW", m, body).(*Store)
		s.Close()
	})
}

// openFast opens a store whose fsyncs do nothing (what the fuzz target
// checks is the format, not durability) and whose bodies go to files of
// their own above 4 KiB.
func openFast(dir string) (*Store, error) {
	s, err := open(dir, segLimit, 4096)
	if s != nil {
		s.fsync = func(*os.File) error { return nil }
	}
	return s, err
}

func openStoreFast(dir string) (queue.Store, error) { return openFast(dir) }

// sameMessages compares two loads by ID (Load's order of equal arrival
// times is not fixed).
func sameMessages(a, b []*queue.Message) bool {
	byID := func(ms []*queue.Message) map[string]*queue.Message {
		out := make(map[string]*queue.Message)
		for _, m := range ms {
			out[m.ID] = m
		}
		return out
	}
	return len(a) == len(b) && reflect.DeepEqual(byID(a), byID(b))
}

// fuzzRecord encodes one record as appendRecord writes it.
func fuzzRecord(typ byte, id string, env, body []byte) []byte {
	b := make([]byte, segHdrLen)
	binary.BigEndian.PutUint32(b, segMagic)
	b[4], b[5] = typ, byte(len(id))
	binary.BigEndian.PutUint32(b[6:], uint32(len(env)))
	binary.BigEndian.PutUint64(b[10:], uint64(len(body)))
	b = append(append(b, id...), env...)
	meta := crc32.Update(0, segCRC, b)
	b = append(b, body...)
	return binary.BigEndian.AppendUint32(b, recordCRC(meta, crc32.Checksum(body, segCRC)))
}
