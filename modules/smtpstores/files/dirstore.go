package files

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

// Store is the files spool: one directory, owned by one process at a
// time (an exclusive flock on its lock file).
//
// Layout: tmp/ holds bodies being received; msg/<id>.eml is a committed
// body and msg/<id>.json its envelope and recipient state. A message is
// committed when its .json exists: Commit fsyncs the body, writes and
// fsyncs the JSON, renames both into msg/ (body first) and fsyncs msg/.
// Directory syncs of concurrent commits are combined (group commit).
// held-domains.json keeps the recipient domains whose delivery is held.
//
// Space: below MinFree free bytes (see spoolfs.Space) new messages are
// refused with queue.ErrInsufficientStorage, at Create and again at
// Commit (the body may have used the rest); envelope updates may use half
// of the reserve. Removing a message needs no space.
type Store struct {
	dir   string
	lock  *os.File
	sync  *spoolfs.GroupSync
	space *spoolfs.Space
}

// Options are the settings of a files spool.
type Options struct {
	// MinFree is the free space kept for the envelopes of queued
	// messages; 0 means the spoolfs.NewSpace default.
	MinFree int64
	// Logger gets the changes of the space state.
	Logger *zap.Logger
}

// Open opens (creating if needed) a spool directory and takes its
// lock. It fails if another process holds the spool.
func Open(dir string) (*Store, error) { return OpenWith(dir, Options{}) }

// OpenWith is Open with options.
func OpenWith(dir string, opts Options) (*Store, error) {
	lock, err := spoolfs.Lock(dir, "msg")
	if err != nil {
		return nil, err
	}
	space, err := spoolfs.NewSpace(dir, opts.MinFree, opts.Logger)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &Store{dir: dir, lock: lock, sync: spoolfs.NewDirSync(filepath.Join(dir, "msg")), space: space}, nil
}

// StorageLow implements queue.SpaceWatcher.
func (s *Store) StorageLow() bool { return s.space.Low() }

// noSpace turns running out of space into queue.ErrInsufficientStorage
// (and the low state).
func (s *Store) noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		s.space.NoSpace()
		return fmt.Errorf("%w: %w", queue.ErrInsufficientStorage, err)
	}
	return err
}

// Dir returns the spool directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) msgPath(id, ext string) string {
	return filepath.Join(s.dir, "msg", id+ext)
}

// Create implements queue.Store.
func (s *Store) Create(id string) (queue.BodyWriter, error) {
	if !queue.ValidID(id) {
		return nil, fmt.Errorf("invalid message id %q", id)
	}
	if s.space.Low() {
		return nil, queue.ErrInsufficientStorage
	}
	f, err := os.OpenFile(filepath.Join(s.dir, "tmp", id+".eml"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	return &dirBody{s: s, id: id, f: f, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

type dirBody struct {
	s    *Store
	id   string
	f    *os.File
	w    *bufio.Writer
	done bool
}

func (b *dirBody) Write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	return n, b.s.noSpace(err)
}

func (b *dirBody) Commit(m *queue.Message) error {
	if b.done {
		return errors.New("queue: body already committed or aborted")
	}
	err := b.commit(m)
	if err != nil {
		b.Abort()
	}
	b.done = true
	return b.s.noSpace(err)
}

func (b *dirBody) commit(m *queue.Message) error {
	if err := b.w.Flush(); err != nil {
		return err
	}
	st, err := b.f.Stat()
	if err != nil {
		return err
	}
	m.ID, m.Size = b.id, st.Size()
	b.s.space.Used(st.Size())
	if !b.s.space.Allows(0, spoolfs.NewMessage) {
		return queue.ErrInsufficientStorage
	}
	if err := spoolfs.Fsync(b.f); err != nil {
		return err
	}
	if err := b.f.Close(); err != nil {
		return err
	}
	tmpJSON := filepath.Join(b.s.dir, "tmp", b.id+".json")
	if err := spoolfs.WriteJSON(tmpJSON, m); err != nil {
		os.Remove(tmpJSON)
		return err
	}
	if err := os.Rename(b.f.Name(), b.s.msgPath(b.id, ".eml")); err != nil {
		os.Remove(tmpJSON)
		return err
	}
	if err := os.Rename(tmpJSON, b.s.msgPath(b.id, ".json")); err != nil {
		os.Remove(b.s.msgPath(b.id, ".eml"))
		return err
	}
	if err := b.s.sync.Sync(); err != nil {
		// Not durable: undo, so the client's retry is the only copy.
		os.Remove(b.s.msgPath(b.id, ".json"))
		os.Remove(b.s.msgPath(b.id, ".eml"))
		return err
	}
	return nil
}

func (b *dirBody) Abort() {
	if b.done {
		return
	}
	b.done = true
	b.f.Close()
	os.Remove(b.f.Name())
}

// Load implements queue.Store. Bodies without an envelope (a crash between the
// two renames: never acknowledged) are removed; envelopes that cannot be
// read are moved to corrupt/ and reported.
func (s *Store) Load() ([]*queue.Message, error) { return s.load(false) }

// load is Load; readOnly leaves bodies without envelopes and unreadable
// envelopes where they are.
func (s *Store) load(readOnly bool) ([]*queue.Message, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "msg"))
	if err != nil {
		return nil, err
	}
	haveJSON := make(map[string]bool)
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			haveJSON[id] = true
		}
	}
	var msgs []*queue.Message
	var bad []string
	for _, e := range entries {
		name := e.Name()
		if id, ok := strings.CutSuffix(name, ".eml"); ok {
			if !haveJSON[id] && !readOnly {
				os.Remove(s.msgPath(id, ".eml"))
			}
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok {
			continue
		}
		m, err := s.readMessage(id)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", id, err))
			if !readOnly {
				s.quarantine(id)
			}
			continue
		}
		msgs = append(msgs, m)
	}
	if len(bad) > 0 && readOnly {
		return msgs, fmt.Errorf("skipped %d unreadable messages: %s", len(bad), strings.Join(bad, "; "))
	}
	if len(bad) > 0 {
		return msgs, fmt.Errorf("moved %d unreadable messages to %s: %s", len(bad),
			filepath.Join(s.dir, "corrupt"), strings.Join(bad, "; "))
	}
	return msgs, nil
}

func (s *Store) readMessage(id string) (*queue.Message, error) {
	data, err := os.ReadFile(s.msgPath(id, ".json"))
	if err != nil {
		return nil, err
	}
	m := new(queue.Message)
	if err := json.Unmarshal(data, m); err != nil {
		return nil, err
	}
	if m.ID != id {
		return nil, fmt.Errorf("envelope names id %q", m.ID)
	}
	if _, err := os.Stat(s.msgPath(id, ".eml")); err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	return m, nil
}

// quarantine moves a message that cannot be loaded out of the way, keeping
// it for a human to look at.
func (s *Store) quarantine(id string) {
	dir := filepath.Join(s.dir, "corrupt")
	_ = os.MkdirAll(dir, 0o700)
	for _, ext := range []string{".json", ".eml"} {
		_ = os.Rename(s.msgPath(id, ext), filepath.Join(dir, id+ext))
	}
}

// Save implements queue.Store: the envelope is replaced atomically.
func (s *Store) Save(m *queue.Message) error {
	if !s.space.Allows(4096, spoolfs.StateUpdate) {
		return fmt.Errorf("saving message %s: %w", m.ID, queue.ErrInsufficientStorage)
	}
	tmp := filepath.Join(s.dir, "tmp", m.ID+".json")
	if err := spoolfs.WriteJSON(tmp, m); err != nil {
		os.Remove(tmp)
		return s.noSpace(err)
	}
	if err := os.Rename(tmp, s.msgPath(m.ID, ".json")); err != nil {
		os.Remove(tmp)
		return err
	}
	return s.sync.Sync()
}

// Remove implements queue.Store. The envelope goes first: a message without an
// envelope is not a message. The directory is not synced: after a power
// loss the worst case is one more delivery of a message already delivered.
func (s *Store) Remove(id string) error {
	if err := os.Remove(s.msgPath(id, ".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Remove(s.msgPath(id, ".eml")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.space.Freed()
	return nil
}

// OpenBody implements queue.Store.
func (s *Store) OpenBody(id string) (io.ReadCloser, error) {
	if !queue.ValidID(id) {
		return nil, fmt.Errorf("invalid message id %q", id)
	}
	return os.Open(s.msgPath(id, ".eml"))
}

// Close implements queue.Store.
func (s *Store) Close() error {
	return s.lock.Close() // closing the descriptor releases the flock
}

// LoadHeldDomains implements queue.DomainHoldStore.
func (s *Store) LoadHeldDomains() ([]string, error) { return spoolfs.LoadHeldDomains(s.dir) }

// SaveHeldDomains implements queue.DomainHoldStore: the file is replaced
// atomically (write, fsync, rename, directory fsync).
func (s *Store) SaveHeldDomains(domains []string) error {
	return spoolfs.SaveHeldDomains(s.dir, domains)
}

// Interface guards
var (
	_ queue.Store           = (*Store)(nil)
	_ queue.DomainHoldStore = (*Store)(nil)
)
