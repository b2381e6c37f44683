package segments

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Envelopes on demand: the index keeps only where each message's latest
// envelope record is (record), and readEnv reads it back with one pread
// of header, id and envelope and one of the record's CRC, which it checks
// (the body's CRC, needed for a msg record's, is kept in the record). A
// reader opens the segment under mu and reads after releasing it: a
// segment that compaction deletes meanwhile stays readable through the
// open descriptor, and holds the same envelope as the copy.

// LoadIndex implements queue.IndexStore: the index entries that scan
// parsed (handed over once, then dropped), and for the others the
// envelope read back and parsed.
func (s *Store) LoadIndex(fn func(queue.Index)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	envs := newEnvReader()
	defer envs.close()
	var bad []string
	for id, e := range s.index {
		x := e.idx
		e.idx = nil
		if x == nil {
			env, err := envs.read(id, e.env)
			var parsed queue.Index
			if err == nil {
				parsed, err = queue.ParseIndex(env)
			}
			if err != nil || parsed.ID != id {
				bad = append(bad, fmt.Sprintf("%s: unreadable envelope", id))
				continue
			}
			x = &parsed
		}
		x.ID = id // the index's copy of the string
		fn(*x)
	}
	return errors.Join(s.loadErr, skipped(bad))
}

// skipped reports the messages that Load and LoadIndex left out; nil if
// none.
func skipped(bad []string) error {
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return fmt.Errorf("skipped %d messages: %s", len(bad), strings.Join(bad, "; "))
}

// LoadMessage implements queue.IndexStore.
func (s *Store) LoadMessage(id string) (*queue.Message, error) {
	s.mu.Lock()
	e, ok := s.index[id]
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("message %s: %w", id, os.ErrNotExist)
	}
	rec := e.env
	f, err := os.Open(rec.seg.path)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if s.envReadHook != nil {
		s.envReadHook()
	}
	env, err := readEnv(f, id, rec)
	if err != nil {
		return nil, err
	}
	return decodeEnv(id, env)
}

func decodeEnv(id string, env []byte) (*queue.Message, error) {
	m := new(queue.Message)
	if err := json.Unmarshal(env, m); err != nil {
		return nil, fmt.Errorf("envelope of message %s: %w", id, err)
	}
	if m.ID != id {
		return nil, fmt.Errorf("envelope of message %s names message %q", id, m.ID)
	}
	return m, nil
}

// readEnv reads the envelope of message id from its record in f and
// checks the record.
func readEnv(f *os.File, id string, rec record) ([]byte, error) {
	n := segHdrLen + len(id) + int(rec.envLen)
	buf := make([]byte, n+4)
	if _, err := f.ReadAt(buf[:n], rec.off); err != nil {
		return nil, fmt.Errorf("reading the envelope of message %s: %w", id, err)
	}
	if _, err := f.ReadAt(buf[n:], rec.off+int64(n)+rec.bodyLen); err != nil {
		return nil, fmt.Errorf("reading the envelope of message %s: %w", id, err)
	}
	typ := buf[4]
	ok := binary.BigEndian.Uint32(buf) == segMagic && (typ == segTypeMsg || typ == segTypeEnv || typ == segTypeFile) &&
		int(buf[5]) == len(id) && binary.BigEndian.Uint32(buf[6:]) == rec.envLen &&
		int64(binary.BigEndian.Uint64(buf[10:])) == rec.bodyLen && bytes.Equal(buf[segHdrLen:segHdrLen+len(id)], []byte(id)) &&
		binary.BigEndian.Uint32(buf[n:]) == recordCRC(crc32.Checksum(buf[:n], segCRC), rec.bodyCRC)
	if !ok {
		return nil, fmt.Errorf("envelope of message %s in %s at %d is damaged (checksum mismatch)", id, filepath.Base(rec.seg.path), rec.off)
	}
	return buf[segHdrLen+len(id) : n], nil
}

// envReader reads many envelopes under mu (Load, LoadIndex, compaction),
// keeping one descriptor per segment.
type envReader struct{ files map[*segment]*os.File }

func newEnvReader() *envReader { return &envReader{files: make(map[*segment]*os.File)} }

func (r *envReader) read(id string, rec record) ([]byte, error) {
	f := r.files[rec.seg]
	if f == nil {
		var err error
		if f, err = os.Open(rec.seg.path); err != nil {
			return nil, err
		}
		r.files[rec.seg] = f
	}
	return readEnv(f, id, rec)
}

func (r *envReader) message(id string, rec record) (*queue.Message, error) {
	env, err := r.read(id, rec)
	if err != nil {
		return nil, err
	}
	return decodeEnv(id, env)
}

func (r *envReader) close() {
	for _, f := range r.files {
		f.Close()
	}
}
