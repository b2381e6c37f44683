package segments

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Opening a spool reads all of it: every record's CRC is checked and every
// envelope's queue.Index parsed. The segments are read by up to GOMAXPROCS
// goroutines at once (readSegment touches nothing shared), and their records
// are applied to the index one segment after the other, in spool order, as
// a later record of a message overrides an earlier one.

// scan reads every segment, rebuilds the index and opens the last segment
// for appending (creating the first one).
func (s *Store) scan() error {
	seqs, err := segmentSeqs(s.dir)
	if err != nil {
		return err
	}
	last, bad := s.readAll(seqs)
	if n := len(s.segs); n > 0 {
		seg := s.segs[n-1]
		f, err := os.OpenFile(seg.path, os.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		seg.f = f
		if last.end < last.size {
			// Torn or corrupt tail: never acknowledged (or damaged).
			if err := f.Truncate(last.end); err != nil {
				return err
			}
			if err := s.fsync(f); err != nil {
				return err
			}
		}
		s.off = last.end
	} else if err := s.newSegment(1); err != nil {
		return err
	}
	if len(bad) > 0 {
		s.loadErr = fmt.Errorf("damaged spool segments (messages after the damage may be lost): %s", strings.Join(bad, "; "))
	}
	return nil
}

// readAll reads the segments seqs into s.segs and the index. It returns
// what the last segment held and, for each other segment that ends in a
// damaged record, where and why (the last one may end in a torn record
// that was never acknowledged).
func (s *Store) readAll(seqs []uint64) (last segScan, bad []string) {
	segs := make([]*segment, len(seqs))
	for i, seq := range seqs {
		segs[i] = &segment{seq: seq, path: s.segPath(seq)}
	}
	reads := readSegments(segs)
	defer reads.stop()
	for i, seg := range segs {
		res := reads.next(i)
		s.segs = append(s.segs, seg)
		s.applyScanned(res.recs)
		seg.size, seg.synced = res.end, res.end
		if res.err != nil && i < len(segs)-1 {
			bad = append(bad, fmt.Sprintf("%s at %d: %v", filepath.Base(seg.path), res.end, res.err))
		}
		last = res
	}
	return last, bad
}

// segScan is what readSegment found in one segment: its good records in
// order, the offset after the last of them, the file size and why it
// stopped early (nil at a clean end).
type segScan struct {
	recs      []scanned
	end, size int64
	err       error
}

// scanned is one good record, to be applied to the index.
type scanned struct {
	typ byte
	id  string
	rec record
	idx *queue.Index // parsed from the envelope; nil for done records or when unreadable
	ref *bodyRef     // file records only
}

// segReads are the segments being read for scan.
type segReads struct {
	results []chan segScan // one per segment, buffered
	tokens  chan struct{}  // one per segment read and not yet taken
	done    chan struct{}  // closed when scan is done with them
}

// readSegments starts reading segs with up to GOMAXPROCS goroutines. A
// segment is read only while fewer than GOMAXPROCS+1 segments are read and
// not yet taken with next, so that the records waiting to be applied stay a
// few segments' worth. stop must be called when done.
func readSegments(segs []*segment) *segReads {
	sr := &segReads{
		results: make([]chan segScan, len(segs)),
		tokens:  make(chan struct{}, runtime.GOMAXPROCS(0)+1),
		done:    make(chan struct{}),
	}
	for i := range sr.results {
		sr.results[i] = make(chan segScan, 1)
	}
	go func() {
		for i, seg := range segs {
			select {
			case sr.tokens <- struct{}{}:
			case <-sr.done:
				return
			}
			go func() { sr.results[i] <- readSegment(seg) }()
		}
	}()
	return sr
}

// next waits for what the i-th segment holds; segments must be taken in
// order.
func (sr *segReads) next(i int) segScan {
	res := <-sr.results[i]
	<-sr.tokens
	return res
}

// stop starts no more reads (those under way finish into their buffers).
func (sr *segReads) stop() { close(sr.done) }

// applyScanned applies the records of one segment to the index, in order.
// Caller is scan.
func (s *Store) applyScanned(recs []scanned) {
	for i := range recs {
		r := &recs[i]
		if r.typ == segTypeFile {
			s.put(r.id, &segEntry{seg: r.rec.seg, env: r.rec, bodyLen: r.ref.size, ref: r.ref, idx: r.idx})
		} else {
			s.apply(r.typ, r.id, r.rec, r.idx)
		}
	}
}

// segmentSeqs returns the numbers of the segments of the spool dir, in
// order.
func segmentSeqs(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "segments"))
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

// readSegment reads the records of one segment, checking each one's CRC
// and parsing its envelope's queue.Index. It reads seg's path and nothing
// else of the store.
func readSegment(seg *segment) (res segScan) {
	f, err := os.Open(seg.path)
	if err != nil {
		res.err = err
		return res
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		res.err = err
		return res
	}
	size := st.Size()
	res.size = size
	fail := func(err error) segScan { res.err = err; return res }
	r := bufio.NewReaderSize(f, 256<<10)
	hdr := make([]byte, segHdrLen)
	// Reused for every record: nothing of them is kept but the id and
	// the parsed index entry.
	var meta []byte
	var refBuf bytes.Buffer
	h := crc32.New(segCRC)
	copyBuf := make([]byte, 64<<10)
	for res.end < size {
		end := res.end
		if _, err := io.ReadFull(r, hdr); err != nil {
			return fail(errors.New("torn record header"))
		}
		typ, idLen := hdr[4], int64(hdr[5])
		envLen := int64(binary.BigEndian.Uint32(hdr[6:]))
		bodyLen := int64(binary.BigEndian.Uint64(hdr[10:]))
		// Each length is checked on its own first: a sum with a huge
		// bodyLen wraps around, and the envelope buffer below would
		// then be as large as the header claims (up to 4 GiB).
		if binary.BigEndian.Uint32(hdr) != segMagic || typ < segTypeMsg || typ > segTypeFile ||
			bodyLen < 0 || bodyLen > size || envLen > size || end+segHdrLen+idLen+envLen+bodyLen+4 > size {
			return fail(errors.New("bad or torn record"))
		}
		crc := crc32.Update(0, segCRC, hdr)
		meta = slices.Grow(meta[:0], int(idLen+envLen))[:idLen+envLen]
		if _, err := io.ReadFull(r, meta); err != nil {
			return fail(err)
		}
		crc = crc32.Update(crc, segCRC, meta)
		h.Reset()
		refBuf.Reset()
		w := io.Writer(h)
		if typ == segTypeFile {
			if bodyLen != bodyRefLen {
				return fail(errors.New("bad file record"))
			}
			w = io.MultiWriter(h, &refBuf)
		}
		if n, err := io.CopyBuffer(w, io.LimitReader(r, bodyLen), copyBuf); err != nil || n < bodyLen {
			return fail(cmp.Or(err, io.ErrUnexpectedEOF))
		}
		var tail [4]byte
		if _, err := io.ReadFull(r, tail[:]); err != nil {
			return fail(err)
		}
		if binary.BigEndian.Uint32(tail[:]) != recordCRC(crc, h.Sum32()) {
			return fail(errors.New("checksum mismatch"))
		}
		id := string(meta[:idLen])
		sc := scanned{typ: typ, id: id, rec: record{seg: seg, off: end, envLen: uint32(envLen), bodyCRC: h.Sum32(), bodyLen: bodyLen}}
		if typ != segTypeEnd {
			if x, err := queue.ParseIndex(meta[idLen:]); err == nil && x.ID == id {
				sc.idx = &x
			}
		}
		if typ == segTypeFile {
			ref, ok := decodeBodyRef(refBuf.Bytes())
			if !ok || !queue.ValidID(id) {
				return fail(errors.New("bad file record"))
			}
			sc.ref = ref
		}
		res.recs = append(res.recs, sc)
		res.end = sc.rec.bodyOff(id) + bodyLen + 4
	}
	return res
}
