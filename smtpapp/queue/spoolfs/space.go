package spoolfs

import (
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// DefaultMinFree is the most free space a spool keeps by default; a
// smaller file system keeps 5% of its size instead.
const DefaultMinFree = 256 << 20

// spaceCheckEvery is how long a statfs result is trusted; writes through
// the spool count against it in between (see Space.Used). Near the line
// (less than twice MinFree free) every check asks the file system, as the
// estimate misses what the file system adds (blocks, inodes, others'
// files).
const spaceCheckEvery = time.Second

// Space watches the free space of the file system that holds a spool, so
// that a store can refuse new messages while keeping room for the state
// records of the messages it holds (done marks, retry updates, copies made
// by compaction). Below MinFree new messages are refused; state records
// may dig into the reserve (see Allows). Once low, the state clears when
// one and a half times MinFree is free again. The state changes are
// logged: a warning when space runs low, info when it is back.
type Space struct {
	dir     string
	logger  *zap.Logger
	minFree int64

	mu      sync.Mutex
	checked time.Time
	free    int64
	low     bool
}

// NewSpace watches the file system of dir. minFree 0 means the default:
// 5% of the file system or DefaultMinFree, whichever is less.
func NewSpace(dir string, minFree int64, logger *zap.Logger) (*Space, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	free, total, err := statfs(dir)
	if err != nil {
		return nil, err
	}
	if minFree <= 0 {
		minFree = min(total/20, DefaultMinFree)
	}
	s := &Space{dir: dir, logger: logger, minFree: minFree, checked: time.Now(), free: free}
	s.setLow(free < minFree)
	return s, nil
}

func statfs(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// MinFree is the free space below which new messages are refused.
func (s *Space) MinFree() int64 { return s.minFree }

// refresh re-reads the free space when the cached value is older than
// spaceCheckEvery (or force). Caller holds mu.
func (s *Space) refresh(force bool) {
	if !force && time.Since(s.checked) < spaceCheckEvery {
		return
	}
	free, _, err := statfs(s.dir)
	if err != nil {
		s.logger.Error("checking free space of the spool", zap.String("path", s.dir), zap.Error(err))
		return
	}
	s.checked, s.free = time.Now(), free
	s.setLow(s.below(free))
}

// below reports whether free is short of the line: MinFree, or half as
// much again once low (so that acceptance does not flap around the line).
// Caller holds mu.
func (s *Space) below(free int64) bool {
	if s.low {
		return free < s.minFree+s.minFree/2
	}
	return free < s.minFree
}

// setLow records the state, logging a change. Caller holds mu.
func (s *Space) setLow(low bool) {
	if low == s.low {
		return
	}
	s.low = low
	fields := []zap.Field{zap.String("path", s.dir), zap.Int64("free_bytes", s.free), zap.Int64("min_free", s.minFree)}
	if low {
		s.logger.Warn("spool storage low: refusing new messages (452 4.3.1) until space is back", fields...)
	} else {
		s.logger.Info("spool storage back: accepting new messages", fields...)
	}
}

// Low reports whether new messages are refused now.
func (s *Space) Low() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh(s.near(0))
	return s.low
}

// near reports whether n more bytes would bring the cached free space
// within twice MinFree. Caller holds mu.
func (s *Space) near(n int64) bool { return s.free-n < 2*s.minFree }

// NoSpace records that a write failed with ENOSPC: new messages are
// refused until space is back.
func (s *Space) NoSpace() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh(true)
	s.setLow(true)
}

// Reserve is how much of the reserve (MinFree) a write may use.
type Reserve int

// What a write may take from the reserve.
const (
	NewMessage  Reserve = iota // none: the message must leave MinFree free
	StateUpdate                // half of it: retry updates, envelopes replaced
	Reclaim                    // three quarters: copies that let compaction free more than they take
)

// Allows reports whether n more bytes may be written for the given kind
// of write (re-reading the free space if the cached value is stale).
// Done marks and deletions need no check: they always go ahead.
func (s *Space) Allows(n int64, r Reserve) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh(s.near(n))
	keep := s.minFree
	switch r {
	case StateUpdate:
		keep /= 2
	case Reclaim:
		keep /= 4
	}
	if s.free-n >= keep {
		return true
	}
	if r == NewMessage {
		// A message that does not fit: refuse the next ones at MAIL
		// until space is back.
		s.setLow(true)
	}
	return false
}

// Used counts n bytes just written against the cached free space.
func (s *Space) Used(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free -= n
	if s.near(0) {
		// Near the line: trust the file system, not the estimate.
		s.refresh(true)
	}
}

// Freed re-reads the free space after files were deleted, so acceptance
// resumes without waiting for the cache to expire.
func (s *Space) Freed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.low {
		s.refresh(true)
	}
}
