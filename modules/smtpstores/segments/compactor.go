package segments

import (
	"time"

	"go.uber.org/zap"
)

// The compactor is one goroutine per store that runs compact when Remove
// asks for it (kickCompactor) and again when the oldest segment's live
// messages have settled. So deliveries never wait for a copy forward, a
// segment's deletion or the fdatasync of the copies: only the commits
// that arrive while compact holds the append mutex do, and only once a
// segment is full or has settled, not after every delivery.

func (s *Store) startCompactor() {
	s.kick = make(chan struct{}, 1)
	s.stop = make(chan struct{})
	s.stopped = make(chan struct{})
	go s.runCompactor()
}

// kickCompactor asks for a compaction pass; it never blocks.
func (s *Store) kickCompactor() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// stopCompactor ends the goroutine and waits for it.
func (s *Store) stopCompactor() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.stopped
}

func (s *Store) runCompactor() {
	defer close(s.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-s.stop:
			timer.Stop()
			return
		case <-s.kick:
		case <-timer.C:
		}
		s.mu.Lock()
		var err error
		if s.err == nil {
			err = s.compact(time.Now())
		}
		s.compactions++
		wait, pinned := s.settlesIn(time.Now())
		s.mu.Unlock()
		if err != nil {
			s.logger.Error("compacting the segment spool", zap.Error(err))
		}
		timer.Stop()
		if pinned {
			timer.Reset(wait)
		}
	}
}

// settlesIn reports whether the oldest non-active segment has live
// messages that have not settled yet, and when they do. (Once settled, a
// segment that compact left alone waits for the next Remove.) Caller
// holds mu.
func (s *Store) settlesIn(now time.Time) (time.Duration, bool) {
	if len(s.segs) < 2 || s.segs[0].live == 0 {
		return 0, false
	}
	wait := s.segs[0].closed.Add(s.settle).Sub(now)
	if wait < 0 {
		return 0, false
	}
	// A little after the deadline, so that the pass finds it settled.
	return wait + 10*time.Millisecond, true
}
