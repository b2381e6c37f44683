package spoolfs

import "sync"

// GroupSync runs one sync (of a directory, of a log file) on behalf of
// many concurrent callers: a caller whose write happened before a sync
// started waits for the next one, so N concurrent commits cost about two
// syncs instead of N (group commit).
type GroupSync struct {
	fn func() error

	mu      sync.Mutex
	cond    *sync.Cond
	running bool
	started uint64 // generation of the last sync started
	done    uint64 // generation of the last sync finished
	err     error  // result of the last finished sync
}

// NewGroupSync returns a GroupSync whose syncs call fn.
func NewGroupSync(fn func() error) *GroupSync {
	g := &GroupSync{fn: fn}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// NewDirSync returns a GroupSync whose syncs fsync the directory dir.
func NewDirSync(dir string) *GroupSync {
	return NewGroupSync(func() error { return SyncDir(dir) })
}

// Sync returns once a sync that started after the call has finished, with
// that sync's result.
func (g *GroupSync) Sync() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	// A running sync may have started before our write; the next one to
	// start covers it.
	need := g.started + 1
	for g.done < need {
		if !g.running {
			g.running = true
			g.started++
			gen := g.started
			g.mu.Unlock()
			err := g.fn()
			g.mu.Lock()
			g.running = false
			g.done, g.err = gen, err
			g.cond.Broadcast()
			continue
		}
		g.cond.Wait()
	}
	return g.err
}
