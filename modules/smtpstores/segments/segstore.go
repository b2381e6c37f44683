package segments

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

// Store is a log-structured spool: committed messages are appended
// to large segment files instead of creating two files per message.
//
// Layout (under the same root as the files spool): lock (flock, one owner),
// tmp/ (bodies too big to buffer, held-domains.json being replaced),
// held-domains.json, segments/<16 hex digits>.seg, numbered in order, and
// bodies/<id>.<16 hex digits> (bodies too big to buffer, one file each).
//
// A segment is a sequence of records:
//
//	magic u32 | type u8 | idLen u8 | envLen u32 | bodyLen u64 | id | env | body | crc32 u32
//
// (big endian; the CRC-32C covers everything before it). Types: msg (the
// envelope JSON and the body), file (the envelope JSON and, as the body, a
// reference to a body file: size u64 | CRC-32C of the body u32 | name u64,
// the hex digits after the id in bodies/), env (a new envelope for a
// message, no body) and done (the message is gone). Spools written before
// file records existed hold none and read as before; a version without
// them stops reading a segment at its first file record.
//
// Durability: Commit and Save append their record under a mutex and then
// wait for an fdatasync of the active segment that started after their
// write (group commit: concurrent callers share one fdatasync). Commit
// returns only once its record is covered by such a sync, so a 250 reply
// means the message is on disk. Remove appends a done record without
// syncing: after a power loss a removed message may come back and be
// delivered once more.
//
// Bodies up to segMemBody bytes are buffered in memory and written into
// the segment with their record. Bigger ones spill to a file in tmp/ and
// are never copied: at Commit, outside the append mutex, the file is
// fdatasynced and renamed into bodies/, and bodies/ is fsynced (concurrent
// commits share that sync); then a small file record is appended and
// synced like any other. So a big message costs the commits behind it
// neither the copy nor the flush of its bytes. A crash before the record
// is durable leaves a body file that no record names: Open deletes such
// orphans (unless damage stopped the scan early, when they may be the
// bodies of the records it could not read). Remove deletes a body file
// only once its done record is synced, so a message never comes back
// without its body. Open checks that every named body file exists with
// its size; its CRC is checked when the body is read to the end.
//
// Memory: the index keeps per message where its body and its latest
// envelope record are, not the envelope: LoadMessage reads the envelope
// back and checks the record's CRC (envread.go). Scan parses each
// record's queue.Index (queue.ParseIndex, without decoding the whole
// envelope) and hands it to LoadIndex once.
//
// Loading scans the segments in order and checks every record's CRC. A
// torn or corrupt record in the last segment ends the log: the segment is
// truncated there (only records never acknowledged, or damaged, are lost).
// Corruption in an older segment (which was fsynced in full when it was
// rotated) stops the scan of that segment and is reported.
//
// Rotation and deletion: a new segment starts once the active one would
// exceed segLimit; the old one is fdatasynced before the switch. Segments
// are deleted oldest first only (so that done and env records in a newer
// segment always outlive the records they cancel): the oldest non-active
// segment is deleted once no live message has its body there. If it still
// holds live messages 30 s (segSettle) after its rotation, when those
// still there are deferred rather than being delivered, and they take at
// most a quarter of segLimit, or if more than segMaxOld non-active
// segments pile up behind it, those messages (body or file reference, and
// latest envelope) are copied forward into the active segment, the copy
// is fdatasynced, and the old segment is deleted. Compaction runs in a
// goroutine of its own (compactor.go), kicked by Remove and woken when
// the oldest segment settles; only while space is low does Remove
// compact before it returns. On Load a later
// msg record for an id replaces an earlier one, and env/done records for
// ids without a msg record (their segment is gone) are ignored.
//
// Space: the store keeps MinFree bytes of the file system free for the
// state records of the messages it holds (see spoolfs.Space). Below it,
// Create and Commit refuse new messages with queue.ErrInsufficientStorage;
// env records may use half the reserve, copies made by compaction three
// quarters, and done records always go ahead. While space is low, a
// mostly dead active segment is rotated so that compaction can delete it
// (an active segment without live messages is also rotated once it
// reaches a quarter of segLimit or MinFree, whichever is less). A done record that still cannot be
// written is retried with the next one.
//
// A failed sync leaves the log in doubt: the records written since the
// last good sync are cut off (their commits fail, so a message answered
// with an error is not delivered after a restart) and the store refuses
// further writes until it is opened again.
type Store struct {
	dir  string
	lock *os.File
	sync *spoolfs.GroupSync

	// fsync makes a segment's or a body file's data durable
	// (fdatasync), syncDir a directory's entries; tests wrap them.
	fsync   func(*os.File) error
	syncDir func(string) error
	// bodySync shares the syncs of bodies/ among concurrent commits.
	bodySync *spoolfs.GroupSync

	mu      sync.Mutex
	segs    []*segment // oldest first; the last is active
	off     int64      // end of the active segment
	index   map[string]*segEntry
	err     error // sticky: set when a sync or a failed write leaves the log in doubt
	loadErr error // damage found by scan, reported by Load
	limit   int64
	memBody int
	space   *spoolfs.Space
	pending []removal // done records that could not be written yet
	copyBuf []byte    // for copying bodies forward; caller holds mu
	recBuf  []byte    // a record being written; caller holds mu

	// settle is how long a rotated segment's live messages may stay
	// before they are copied forward: most are being delivered and
	// are gone within seconds, so copying them would be wasted work.
	settle time.Duration
	// The compactor (compactor.go) runs compaction off the Remove path.
	kick    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	logger  *zap.Logger
	// compactions counts the compactor's passes (for tests).
	compactions int
	// envReadHook, when set, runs in LoadMessage between the lookup and
	// the read (for tests).
	envReadHook func()
}

// removal is a done record to write, and the body file to delete once it
// is synced ("" when the body is in a segment).
type removal struct{ id, file string }

// Options are the settings of a segment spool.
type Options struct {
	// MinFree is the free space kept for state records; 0 means the
	// spoolfs.NewSpace default.
	MinFree int64
	// Logger gets the changes of the space state.
	Logger *zap.Logger
}

type segment struct {
	seq       uint64
	path      string
	f         *os.File // open for writing while active
	kept      *os.File // f after rotation, open while readers use it
	readers   int      // open body readers using f (or kept)
	live      int      // live messages whose body is here
	liveBytes int64
	size      int64
	synced    int64     // bytes covered by a successful sync
	closed    time.Time // when it stopped being the active one; zero if found at Open
}

type segEntry struct {
	seg     *segment
	bodyOff int64
	bodyLen int64
	ref     *bodyRef // the body's own file; nil when it is in seg
	// env is the record of the latest envelope: it is read back from
	// the segment when asked for (readEnv), not kept in memory.
	env record
	// idx is the queue's index entry, parsed from env by scan and kept
	// until LoadIndex hands it over; nil after that or when unreadable.
	idx *queue.Index
}

// record is where a record is in its segment: enough to read its
// envelope back and check it against the record's CRC.
type record struct {
	seg     *segment
	off     int64 // of the record's header
	envLen  uint32
	bodyCRC uint32 // CRC-32C of its body part, for the record's CRC
	bodyLen int64  // its body part: the body, a bodyRef or nothing
}

// bodyOff is where the body part of the record of message id starts.
func (r record) bodyOff(id string) int64 {
	return r.off + segHdrLen + int64(len(id)) + int64(r.envLen)
}

// bodyRef is the body part of a file record: where a body too big for a
// segment is, and its checksum.
type bodyRef struct {
	size int64
	crc  uint32
	name uint64
}

const bodyRefLen = 8 + 4 + 8

func (r *bodyRef) encode() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, bodyRefLen), uint64(r.size))
	b = binary.BigEndian.AppendUint32(b, r.crc)
	return binary.BigEndian.AppendUint64(b, r.name)
}

func decodeBodyRef(b []byte) (*bodyRef, bool) {
	if len(b) != bodyRefLen || int64(binary.BigEndian.Uint64(b)) < 0 {
		return nil, false
	}
	return &bodyRef{size: int64(binary.BigEndian.Uint64(b)), crc: binary.BigEndian.Uint32(b[8:]), name: binary.BigEndian.Uint64(b[12:])}, true
}

// bodyFile is the name of a body file in bodies/.
func bodyFile(id string, name uint64) string { return fmt.Sprintf("%s.%016x", id, name) }

// file is the name of e's body file, "" when its body is in its segment.
func (e *segEntry) file(id string) string {
	if e.ref == nil {
		return ""
	}
	return bodyFile(id, e.ref.name)
}

// inSeg is how many bytes of e's body are in its segment.
func (e *segEntry) inSeg() int64 {
	if e.ref != nil {
		return 0
	}
	return e.bodyLen
}

const (
	segMagic    = 0x534d5451 // "SMTQ"
	segHdrLen   = 4 + 1 + 1 + 4 + 8
	segTypeMsg  = 1
	segTypeEnv  = 2
	segTypeEnd  = 3 // done
	segTypeFile = 4 // msg whose body is in bodies/

	segLimit   = 64 << 20
	segMemBody = 256 << 10
	segMaxOld  = 8

	// segSettle is how long a rotated segment's live messages wait
	// before being copied forward (Store.settle).
	segSettle = 30 * time.Second

	// segMinReclaim is the smallest active segment rotated to reclaim
	// its dead records.
	segMinReclaim = 64 << 10
)

var segCRC = crc32.MakeTable(crc32.Castagnoli)

// Open opens (creating if needed) a segment spool, takes its
// lock and reads the segments (see Store).
func Open(dir string) (*Store, error) {
	return OpenWith(dir, Options{})
}

// OpenWith is Open with options.
func OpenWith(dir string, opts Options) (*Store, error) {
	return openWith(dir, segLimit, segMemBody, opts)
}

func open(dir string, limit int64, memBody int) (*Store, error) {
	return openWith(dir, limit, memBody, Options{})
}

func openWith(dir string, limit int64, memBody int, opts Options) (*Store, error) {
	lock, err := spoolfs.Lock(dir, "segments")
	if err != nil {
		return nil, err
	}
	space, err := spoolfs.NewSpace(dir, opts.MinFree, opts.Logger)
	if err != nil {
		lock.Close()
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "bodies"), 0o700); err != nil {
		lock.Close()
		return nil, fmt.Errorf("creating spool: %w", err)
	}
	s := &Store{
		dir: dir, lock: lock, index: make(map[string]*segEntry),
		limit: limit, memBody: memBody, space: space,
		fsync: fdatasync, syncDir: spoolfs.SyncDir,
		settle: segSettle, logger: opts.Logger,
	}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	s.sync = spoolfs.NewGroupSync(s.syncActive)
	s.bodySync = spoolfs.NewGroupSync(func() error { return s.syncDir(s.bodiesDir()) })
	err = s.scan()
	if err == nil {
		err = s.checkBodyFiles()
	}
	if err != nil {
		s.closeFiles()
		lock.Close()
		return nil, err
	}
	s.startCompactor()
	return s, nil
}

func (s *Store) bodiesDir() string { return filepath.Join(s.dir, "bodies") }

// checkBodyFiles drops the messages whose body file is missing or has
// the wrong size (reporting them with Load) and deletes the body files
// that no message names: their commit did not complete. After damage in
// an older segment the unnamed files are kept, as the records naming them
// may be in the part that could not be read.
func (s *Store) checkBodyFiles() error {
	named := make(map[string]bool)
	var bad []string
	for id, e := range s.index {
		name := e.file(id)
		if name == "" {
			continue
		}
		st, err := os.Stat(filepath.Join(s.bodiesDir(), name))
		if err != nil || st.Size() != e.ref.size {
			bad = append(bad, fmt.Sprintf("%s: body file bodies/%s missing or truncated", id, name))
			s.forget(id)
			continue
		}
		named[name] = true
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		s.loadErr = errors.Join(s.loadErr, fmt.Errorf("skipped %d messages: %s", len(bad), strings.Join(bad, "; ")))
	}
	entries, err := os.ReadDir(s.bodiesDir())
	if err != nil {
		return err
	}
	for _, de := range entries {
		if !named[de.Name()] && s.loadErr == nil {
			os.Remove(filepath.Join(s.bodiesDir(), de.Name()))
		}
	}
	return nil
}

// Dir returns the spool directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) segPath(seq uint64) string {
	return filepath.Join(s.dir, "segments", fmt.Sprintf("%016x.seg", seq))
}

// recordCRC is what a record's trailer holds: the CRC of header, id and
// envelope, chained with the CRC of the body (computed separately so the
// body can be streamed).
func recordCRC(metaCRC, bodyCRC uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], bodyCRC)
	return crc32.Update(metaCRC, segCRC, b[:])
}

// apply updates the index with one msg, env or done record (and its
// index entry, when scan parsed it). Caller holds mu (or is scan).
func (s *Store) apply(typ byte, id string, r record, idx *queue.Index) {
	switch typ {
	case segTypeMsg:
		s.put(id, &segEntry{seg: r.seg, bodyOff: r.bodyOff(id), bodyLen: r.bodyLen, env: r, idx: idx})
	case segTypeEnv:
		if old := s.index[id]; old != nil {
			old.env, old.idx = r, idx
		}
	case segTypeEnd:
		if old := s.index[id]; old != nil {
			s.unlive(old)
			delete(s.index, id)
		}
	}
}

// unlive takes e off its segment's live counts. Caller holds mu (or is
// scan).
func (s *Store) unlive(e *segEntry) {
	e.seg.live--
	e.seg.liveBytes -= e.inSeg()
}

// forget removes message id from the index (after a done record).
// Caller holds mu (or is scan).
func (s *Store) forget(id string) { s.apply(segTypeEnd, id, record{}, nil) }

// put makes e the message id (after a msg or file record in e.seg).
// Caller holds mu (or is scan).
func (s *Store) put(id string, e *segEntry) {
	if old := s.index[id]; old != nil {
		s.unlive(old)
	}
	s.index[id] = e
	e.seg.live++
	e.seg.liveBytes += e.inSeg()
}

// newSegment creates segment seq, makes its directory entry durable and
// makes it active. Caller holds mu (or is scan).
func (s *Store) newSegment(seq uint64) error {
	seg := &segment{seq: seq, path: s.segPath(seq)}
	f, err := os.OpenFile(seg.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := spoolfs.SyncDir(filepath.Join(s.dir, "segments")); err != nil {
		f.Close()
		os.Remove(seg.path)
		return err
	}
	seg.f = f
	s.segs = append(s.segs, seg)
	s.off = 0
	return nil
}

func (s *Store) active() *segment { return s.segs[len(s.segs)-1] }

// rotate syncs the active segment in full and starts the next. Caller
// holds mu.
func (s *Store) rotate() error {
	cur := s.active()
	if err := s.fsync(cur.f); err != nil {
		s.inDoubt(cur, err)
		return s.err
	}
	cur.synced = cur.size
	if err := s.newSegment(cur.seq + 1); err != nil {
		return err
	}
	cur.closed = time.Now()
	// Everything in cur is durable, so a group sync still holding it may
	// find it closed and ignore that (see syncActive).
	cur.retire()
	return nil
}

// syncActive is the group-commit sync: fdatasync of the active segment.
// Bytes written to an older segment were synced when it was rotated.
func (s *Store) syncActive() error {
	s.mu.Lock()
	if s.err != nil {
		// In doubt: the records waiting for this sync were cut off.
		defer s.mu.Unlock()
		return s.err
	}
	seg := s.active()
	f, end := seg.f, s.off
	s.mu.Unlock()
	err := s.fsync(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		seg.synced = max(seg.synced, end)
		return nil
	}
	if f.Fd() == ^uintptr(0) || s.active() != seg {
		// Rotated (and closed) meanwhile: rotate synced it in full.
		return nil
	}
	if s.err == nil {
		s.inDoubt(seg, err)
	}
	return err
}

// inDoubt handles a failed sync of seg: the store refuses further writes,
// and the records written after the last good sync are cut off, so that
// none of the commits that fail with it comes back after a restart.
// Caller holds mu.
func (s *Store) inDoubt(seg *segment, err error) {
	s.err = fmt.Errorf("syncing segment: %w", err)
	if seg.f == nil || seg.size <= seg.synced {
		return
	}
	if terr := seg.f.Truncate(seg.synced); terr != nil {
		s.err = errors.Join(s.err, fmt.Errorf("cutting off unsynced records: %w", terr))
		return
	}
	_ = seg.f.Sync()
	seg.size = seg.synced
	if seg == s.active() {
		s.off = seg.synced
	}
}

// fdatasync syncs a file's data (and size), holding a reference to the
// descriptor so a concurrent Close cannot hand its number to another file.
func fdatasync(f *os.File) error {
	if err := spoolfs.BeforeSync(f.Name(), spoolfs.SyncFile); err != nil {
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// appendRecord writes one record at the end of the active segment
// (rotating first if it would not fit) and returns where it is. body, if
// not nil, supplies bodyLen bytes. Caller holds mu.
func (s *Store) appendRecord(typ byte, id string, env []byte, body io.Reader, bodyLen int64) (record, error) {
	if s.err != nil {
		return record{}, s.err
	}
	total := segHdrLen + int64(len(id)) + int64(len(env)) + bodyLen + 4
	if s.off > 0 && s.off+total > s.limit {
		if err := s.rotate(); err != nil {
			return record{}, err
		}
	}
	seg := s.active()
	start := s.off
	// One buffer for the record, kept between appends (mu is held).
	need := segHdrLen + len(id) + len(env) + 4 + int(min(bodyLen, int64(s.memBody)))
	if cap(s.recBuf) < need {
		s.recBuf = make([]byte, 0, max(need, 2*cap(s.recBuf)))
	}
	buf := s.recBuf[:segHdrLen]
	binary.BigEndian.PutUint32(buf, segMagic)
	buf[4], buf[5] = typ, byte(len(id))
	binary.BigEndian.PutUint32(buf[6:], uint32(len(env)))
	binary.BigEndian.PutUint64(buf[10:], uint64(bodyLen))
	buf = append(buf, id...)
	buf = append(buf, env...)
	metaCRC := crc32.Update(0, segCRC, buf)
	bodyOff := start + int64(len(buf))
	var bodyCRC uint32
	err := func() error {
		if mb, ok := body.(*bytes.Reader); body == nil || ok && bodyLen <= int64(s.memBody) {
			// Small body: one write for the whole record.
			n := len(buf)
			buf = buf[:n+int(bodyLen)]
			if bodyLen > 0 {
				if _, err := io.ReadFull(mb, buf[n:]); err != nil {
					return err
				}
			}
			bodyCRC = crc32.Checksum(buf[n:], segCRC)
			buf = binary.BigEndian.AppendUint32(buf, recordCRC(metaCRC, bodyCRC))
			_, err := seg.f.WriteAt(buf, start)
			return err
		}
		if _, err := seg.f.WriteAt(buf, start); err != nil {
			return err
		}
		h := crc32.New(segCRC)
		w := io.NewOffsetWriter(seg.f, bodyOff)
		if bodyLen > 0 {
			if s.copyBuf == nil {
				s.copyBuf = make([]byte, 256<<10)
			}
			if _, err := io.CopyBuffer(io.MultiWriter(w, h), io.LimitReader(body, bodyLen), s.copyBuf); err != nil {
				return err
			}
		}
		if off, _ := w.Seek(0, io.SeekCurrent); off != bodyLen {
			return fmt.Errorf("body shorter than %d bytes", bodyLen)
		}
		bodyCRC = h.Sum32()
		_, err := seg.f.WriteAt(binary.BigEndian.AppendUint32(nil, recordCRC(metaCRC, bodyCRC)), bodyOff+bodyLen)
		return err
	}()
	if err != nil {
		// Leave no garbage before the next record: it would end the log.
		if terr := seg.f.Truncate(start); terr != nil {
			s.err = fmt.Errorf("segment left in doubt: %w", terr)
		}
		return record{}, err
	}
	s.off = start + total
	seg.size = s.off
	return record{seg: seg, off: start, envLen: uint32(len(env)), bodyCRC: bodyCRC, bodyLen: bodyLen}, nil
}

// Create implements queue.Store.
func (s *Store) Create(id string) (queue.BodyWriter, error) {
	if !queue.ValidID(id) {
		return nil, fmt.Errorf("invalid message id %q", id)
	}
	if s.space.Low() {
		return nil, queue.ErrInsufficientStorage
	}
	return &segBody{s: s, id: id, buf: bodyBuffers.Get().(*bytes.Buffer)}, nil
}

// bodyBuffers keeps the buffers of bodies that fit in memory between
// messages: growing a new one per message, copy after copy, cost more
// CPU than anything else the store does.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

type segBody struct {
	s     *Store
	id    string
	buf   *bytes.Buffer // nil once released
	spill *os.File
	path  string // where spill is now; "" once a record names it
	w     *bufio.Writer
	crc   uint32 // of the spilled bytes
	n     int64
	done  bool
}

func (b *segBody) Write(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("queue: body already committed or aborted")
	}
	if b.spill == nil && b.buf.Len()+len(p) > b.s.memBody {
		f, err := os.OpenFile(filepath.Join(b.s.dir, "tmp", b.id+".eml"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return 0, err
		}
		b.spill, b.path, b.w = f, f.Name(), bufio.NewWriterSize(f, 64<<10)
		if _, err := b.w.Write(b.buf.Bytes()); err != nil {
			return 0, err
		}
		b.crc = crc32.Checksum(b.buf.Bytes(), segCRC)
		b.releaseBuf()
	}
	var n int
	var err error
	if b.spill != nil {
		n, err = b.w.Write(p)
		b.crc = crc32.Update(b.crc, segCRC, p[:n])
	} else {
		n, err = b.buf.Write(p)
	}
	b.n += int64(n)
	return n, b.s.noSpace(err)
}

// noSpace turns running out of space into queue.ErrInsufficientStorage
// (and the low state).
func (s *Store) noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		s.space.NoSpace()
		return fmt.Errorf("%w: %w", queue.ErrInsufficientStorage, err)
	}
	return err
}

func (b *segBody) Commit(m *queue.Message) error {
	if b.done {
		return errors.New("queue: body already committed or aborted")
	}
	defer b.Abort()
	m.ID, m.Size = b.id, b.n
	env := queue.AppendJSON(make([]byte, 0, 512), m)
	s := b.s
	var err error
	var ref *bodyRef
	if b.spill != nil {
		if ref, err = b.moveToBodies(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	if ref != nil {
		var rec record
		rec, err = s.appendChecked(segTypeFile, b.id, env, bytes.NewReader(ref.encode()), bodyRefLen, spoolfs.NewMessage)
		if err == nil {
			s.put(b.id, &segEntry{seg: rec.seg, env: rec, bodyLen: b.n, ref: ref})
			// Named by a record now: after a failed sync the next Open
			// decides whether it stays.
			b.path = ""
		}
	} else {
		var rec record
		rec, err = s.appendChecked(segTypeMsg, b.id, env, bytes.NewReader(b.buf.Bytes()), b.n, spoolfs.NewMessage)
		if err == nil {
			s.apply(segTypeMsg, b.id, rec, nil)
		}
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.sync.Sync(); err != nil {
		// Not known to be durable: forget it, the client will retry.
		s.mu.Lock()
		s.forget(b.id)
		s.mu.Unlock()
		return err
	}
	return nil
}

// moveToBodies makes the spilled body durable in bodies/ (fdatasync,
// rename, a shared sync of bodies/), without the append mutex: commits of
// other messages go on meanwhile. It returns the reference for the file
// record.
func (b *segBody) moveToBodies() (*bodyRef, error) {
	s := b.s
	if err := b.w.Flush(); err != nil {
		return nil, s.noSpace(err)
	}
	// The body is on disk already; the record must still leave MinFree.
	if !s.space.Allows(b.n, spoolfs.NewMessage) {
		return nil, queue.ErrInsufficientStorage
	}
	if err := s.fsync(b.spill); err != nil {
		return nil, err
	}
	ref := &bodyRef{size: b.n, crc: b.crc, name: rand.Uint64()}
	path := filepath.Join(s.bodiesDir(), bodyFile(b.id, ref.name))
	if err := os.Rename(b.path, path); err != nil {
		return nil, err
	}
	b.path = path
	if err := s.bodySync.Sync(); err != nil {
		return nil, err
	}
	s.space.Used(b.n)
	return ref, nil
}

// releaseBuf hands the memory buffer back for the next message.
func (b *segBody) releaseBuf() {
	if b.buf == nil {
		return
	}
	if b.buf.Cap() <= 2*b.s.memBody {
		b.buf.Reset()
		bodyBuffers.Put(b.buf)
	}
	b.buf = nil
}

func (b *segBody) Abort() {
	if b.done {
		return
	}
	b.done = true
	b.releaseBuf()
	if b.spill != nil {
		b.spill.Close()
		if b.path != "" {
			os.Remove(b.path)
		}
	}
}

// Load implements queue.Store.
func (s *Store) Load() ([]*queue.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var msgs []*queue.Message
	var bad []string
	envs := newEnvReader()
	defer envs.close()
	for id, e := range s.index {
		m, err := envs.message(id, e.env)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: unreadable envelope", id))
			continue
		}
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].Arrived.Before(msgs[j].Arrived) })
	return msgs, errors.Join(s.loadErr, skipped(bad))
}

// Save implements queue.Store: an env record, synced like a commit.
func (s *Store) Save(m *queue.Message) error {
	env := queue.AppendJSON(make([]byte, 0, 512), m)
	s.mu.Lock()
	if _, ok := s.index[m.ID]; !ok {
		s.mu.Unlock()
		return fmt.Errorf("message %s: %w", m.ID, os.ErrNotExist)
	}
	prev := s.index[m.ID].env
	rec, err := s.appendChecked(segTypeEnv, m.ID, env, nil, 0, spoolfs.StateUpdate)
	if err == nil {
		s.apply(segTypeEnv, m.ID, rec, nil)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.sync.Sync(); err != nil {
		// The record was cut off (inDoubt): the envelope is the one
		// saved before, as the caller is told.
		s.mu.Lock()
		if e := s.index[m.ID]; e != nil && e.env == rec {
			e.env = prev
		}
		s.mu.Unlock()
		return err
	}
	return nil
}

// appendChecked is appendRecord for a write that must leave the reserve
// of r free; running out of space is queue.ErrInsufficientStorage.
// Caller holds mu.
func (s *Store) appendChecked(typ byte, id string, env []byte, body io.Reader, bodyLen int64, r spoolfs.Reserve) (record, error) {
	total := segHdrLen + int64(len(id)) + int64(len(env)) + bodyLen + 4
	if !s.space.Allows(total, r) {
		return record{}, queue.ErrInsufficientStorage
	}
	rec, err := s.appendRecord(typ, id, env, body, bodyLen)
	err = s.noSpace(err)
	if err == nil {
		s.space.Used(total)
	}
	return rec, err
}

// StorageLow implements queue.SpaceWatcher.
func (s *Store) StorageLow() bool { return s.space.Low() }

// Remove implements queue.Store: a done record, not synced (a power loss may
// bring the message back for one more delivery). Done records use the
// space reserve; one that cannot be written even so is kept and retried
// with the next Remove, and the message is forgotten at once, so that
// compaction can reclaim its segment.
//
// A body in a file of its own is deleted once the done record is synced
// (Remove waits for that sync, shared with concurrent commits), so that a
// message that comes back after a crash has its body.
func (s *Store) Remove(id string) error {
	s.mu.Lock()
	e, ok := s.index[id]
	if !ok {
		s.mu.Unlock()
		return nil
	}
	s.forget(id)
	s.pending = append(s.pending, removal{id: id, file: e.file(id)})
	var err error
	var files []string
	for len(s.pending) > 0 {
		if _, err = s.appendRecord(segTypeEnd, s.pending[0].id, nil, nil, 0); err != nil {
			break
		}
		if f := s.pending[0].file; f != "" {
			files = append(files, f)
		}
		s.pending = s.pending[1:]
	}
	if s.space.Low() {
		// Short of space: reclaim at once, so that the next commit
		// may find room.
		err = errors.Join(err, s.compact(time.Now()))
	} else {
		s.kickCompactor()
	}
	s.mu.Unlock()
	if len(files) == 0 {
		return err
	}
	if serr := s.sync.Sync(); serr != nil {
		// The done records may be cut off: keep the bodies (the next
		// Open deletes those no record names).
		return errors.Join(err, serr)
	}
	for _, f := range files {
		os.Remove(filepath.Join(s.bodiesDir(), f))
	}
	s.space.Freed()
	return err
}

// compact deletes, oldest first, non-active segments without live bodies,
// copying forward the few live messages that pin the oldest once it has
// settled (see Store). Caller holds mu.
func (s *Store) compact(now time.Time) error {
	low := s.space.Low()
	if a := s.active(); s.off >= min(segMinReclaim, s.limit/4) &&
		(a.live == 0 && s.off >= min(s.limit/4, s.space.MinFree()) || low && a.liveBytes*2 < s.off) {
		// The active segment is never deleted: start another so that
		// this one can go.
		if err := s.rotate(); err != nil {
			return err
		}
	}
	deleted := false
	defer func() {
		if deleted {
			s.space.Freed()
		}
	}()
	// Bounded: copying forward may itself rotate.
	for n := len(s.segs) - 1; n > 0 && len(s.segs) > 1; n-- {
		old := s.segs[0]
		if old.live > 0 {
			var size, live int64
			for _, seg := range s.segs[:len(s.segs)-1] {
				size += seg.size
				live += seg.liveBytes
			}
			mostlyDead := len(s.segs)-1 > segMaxOld && live*2 < size
			reclaims := low && old.liveBytes*2 < old.size
			settled := now.Sub(old.closed) >= s.settle
			if (old.liveBytes > s.limit/4 || !settled) && !mostlyDead && !reclaims {
				return nil
			}
			if !s.space.Allows(old.liveBytes, spoolfs.Reclaim) {
				return nil // the copy would not fit
			}
			if err := s.copyForward(old); err != nil {
				return err
			}
		}
		if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		deleted = true
		s.segs = s.segs[1:]
	}
	return nil
}

// copyForward appends msg records for the live messages whose body is in
// old to the active segment and syncs them. Caller holds mu.
func (s *Store) copyForward(old *segment) error {
	f, err := os.Open(old.path)
	if err != nil {
		return err
	}
	defer f.Close()
	var ids []string
	for id, e := range s.index {
		if e.seg == old {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	orig := make(map[string]*segEntry, len(ids)) // the originals of the copies made
	if err := s.copyEach(f, ids, orig); err != nil {
		s.uncopy(orig)
		return err
	}
	// The copies must be durable before the original goes. Earlier
	// segments written by this loop were synced when rotated.
	a := s.active()
	if err := s.fsync(a.f); err != nil {
		s.inDoubt(a, err)
		s.uncopy(orig)
		return s.err
	}
	a.synced = a.size
	return nil
}

// copyEach copies the messages ids from the old segment's file f to the
// active segment (which may rotate on the way), noting each original in
// orig. Caller holds mu.
func (s *Store) copyEach(f *os.File, ids []string, orig map[string]*segEntry) error {
	envs := newEnvReader()
	defer envs.close()
	for _, id := range ids {
		e := s.index[id]
		env, err := envs.read(id, e.env)
		if err != nil {
			return err
		}
		var rec record
		if e.ref != nil {
			rec, err = s.appendRecord(segTypeFile, id, env, bytes.NewReader(e.ref.encode()), bodyRefLen)
		} else {
			rec, err = s.appendRecord(segTypeMsg, id, env, io.NewSectionReader(f, e.bodyOff, e.bodyLen), e.bodyLen)
		}
		if err != nil {
			return err
		}
		orig[id] = e
		if e.ref != nil {
			s.put(id, &segEntry{seg: rec.seg, env: rec, bodyLen: e.bodyLen, ref: e.ref, idx: e.idx})
		} else {
			s.apply(segTypeMsg, id, rec, e.idx)
			s.space.Used(e.bodyLen)
		}
	}
	return nil
}

// uncopy points the messages of orig back at their originals where the
// copy is not known to be durable: past its segment's synced length (cut
// off by a failed sync, in the active segment or in one whose rotation
// failed, or not synced yet). Caller holds mu.
func (s *Store) uncopy(orig map[string]*segEntry) {
	for id, e := range orig {
		if cur := s.index[id]; cur != nil && cur != e && cur.env.off >= cur.seg.synced {
			s.put(id, e)
		}
	}
}

// OpenBody implements queue.Store: a reader over the body's region of its
// segment, through the active segment's file (kept open for the reader)
// or a descriptor of its own; either way it outlives the segment's
// deletion.
func (s *Store) OpenBody(id string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.index[id]
	if !ok {
		return nil, fmt.Errorf("message %s: %w", id, os.ErrNotExist)
	}
	if e.ref != nil {
		f, err := os.Open(filepath.Join(s.bodiesDir(), e.file(id)))
		if err != nil {
			return nil, err
		}
		return &fileReader{r: io.LimitReader(f, e.ref.size+1), f: f, want: *e.ref}, nil
	}
	if seg := e.seg; seg.f != nil {
		// The active segment (new mail): read through its open file,
		// without an open and a close per delivery. The file stays open
		// until the last such reader is closed (see release).
		seg.readers++
		return &segReader{SectionReader: io.NewSectionReader(seg.f, e.bodyOff, e.bodyLen), s: s, seg: seg}, nil
	}
	f, err := os.Open(e.seg.path)
	if err != nil {
		return nil, err
	}
	return &segReader{SectionReader: io.NewSectionReader(f, e.bodyOff, e.bodyLen), f: f}, nil
}

// segReader reads a body in a segment: through a file opened for it (f),
// or through the segment's own file (seg), which it holds open.
type segReader struct {
	*io.SectionReader
	f    *os.File
	s    *Store
	seg  *segment
	done bool
}

func (r *segReader) Close() error {
	if r.f != nil {
		return r.f.Close()
	}
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if !r.done {
		r.done = true
		r.seg.readers--
		r.seg.release()
	}
	return nil
}

// release closes a segment's file kept open for readers once it is no
// longer active and the last reader is done. Caller holds mu.
func (seg *segment) release() {
	if seg.readers == 0 && seg.kept != nil {
		seg.kept.Close()
		seg.kept = nil
	}
}

// retire takes the file of a segment that stops being active (rotation,
// Close): closed now, or kept for the readers still using it.
func (seg *segment) retire() {
	seg.kept, seg.f = seg.f, nil
	seg.release()
}

// fileReader reads a body file and, at its end, checks its size and CRC
// against the file record's.
type fileReader struct {
	r    io.Reader
	f    *os.File
	want bodyRef
	n    int64
	crc  uint32
}

func (r *fileReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	r.crc = crc32.Update(r.crc, segCRC, p[:n])
	if err == io.EOF && (r.n != r.want.size || r.crc != r.want.crc) || r.n > r.want.size {
		return n, fmt.Errorf("body file %s is damaged (%d bytes, checksum %08x; the record says %d, %08x)",
			filepath.Base(r.f.Name()), r.n, r.crc, r.want.size, r.want.crc)
	}
	return n, err
}

func (r *fileReader) Close() error { return r.f.Close() }

// LoadHeldDomains implements queue.DomainHoldStore (the same file as the files store).
func (s *Store) LoadHeldDomains() ([]string, error) { return spoolfs.LoadHeldDomains(s.dir) }

// SaveHeldDomains implements queue.DomainHoldStore.
func (s *Store) SaveHeldDomains(domains []string) error {
	return spoolfs.SaveHeldDomains(s.dir, domains)
}

func (s *Store) closeFiles() {
	for _, seg := range s.segs {
		if seg.f != nil {
			seg.retire()
		}
	}
}

// Close implements queue.Store.
func (s *Store) Close() error {
	s.stopCompactor()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if a := s.active(); a.f != nil {
		err = s.fsync(a.f) // done records too
	}
	s.closeFiles()
	s.err = errors.New("queue: store closed")
	return errors.Join(err, s.lock.Close())
}

// Interface guards
var (
	_ queue.Store           = (*Store)(nil)
	_ queue.DomainHoldStore = (*Store)(nil)
	_ queue.IndexStore      = (*Store)(nil)
)
