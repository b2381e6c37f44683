package queue

import (
	"container/heap"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Claimer is implemented by stores that several gateways share (a fleet):
// each node delivers only the messages it has a claim on, and takes over
// the messages of a node that stopped renewing its claims (it died).
// Load returns only this node's messages.
type Claimer interface {
	// Holds reports whether this node's claims are surely valid now;
	// while they are not (the shared store is unreachable), no delivery
	// starts.
	Holds() bool
	// Delivering marks a message as being delivered until the next Save
	// or Remove, so that a node taking it over from a dead one knows it
	// may deliver it twice.
	Delivering(id string) error
	// Sync takes over the messages of dead nodes (returned, for the
	// queue to schedule) and names the messages the queue holds that are
	// no longer this node's (for it to drop).
	Sync() (adopted []*Message, lost []string, err error)
	// SyncInterval is how often the queue calls Sync.
	SyncInterval() time.Duration
}

// startClaims runs the claim loop when the store is shared (New calls
// it).
func (q *Queue) startClaims() {
	c, ok := q.store.(Claimer)
	if !ok {
		return
	}
	go func() {
		tick := time.NewTicker(c.SyncInterval())
		defer tick.Stop()
		for {
			select {
			case <-q.ctx.Done():
				return
			case <-tick.C:
			}
			q.sync(c)
		}
	}()
}

// sync applies one Sync: schedules adopted messages, drops lost ones that
// no round is delivering (a running round's Save fails and the next Sync
// names the message again).
func (q *Queue) sync(c Claimer) {
	adopted, lost, err := c.Sync()
	if err != nil {
		q.log().Warn("syncing claims with the shared queue", zap.Error(err))
	}
	now := time.Now()
	q.mu.Lock()
	for _, m := range adopted {
		if _, ok := q.entries[m.ID]; ok {
			continue
		}
		q.addStored(m, now)
	}
	for _, id := range lost {
		e := q.entries[id]
		if e == nil || !q.idle(e) {
			continue
		}
		if e.index >= 0 {
			heap.Remove(&q.due, e.index)
		}
		delete(q.admin.parked, id)
		delete(q.entries, id)
	}
	q.mu.Unlock()
	if len(adopted) > 0 {
		q.log().Info("took over messages of a node that stopped", zap.Int("messages", len(adopted)))
		q.kick()
	}
	if len(lost) > 0 {
		q.log().Warn("messages taken over by another node while this one could not renew its claims", zap.Int("messages", len(lost)))
	}
	if hs, ok := q.store.(DomainHoldStore); ok {
		q.syncHeldDomains(hs)
	}
}

// syncHeldDomains applies the held domains that the shared store lists,
// so that a domain held or released on one node is held or released on
// every node within a sync interval.
func (q *Queue) syncHeldDomains(hs DomainHoldStore) {
	// A change made here after the read wins over the list read: the
	// next sync reads it back.
	q.admin.domainsMu.Lock()
	gen := q.admin.domainsGen
	q.admin.domainsMu.Unlock()
	list, err := hs.LoadHeldDomains()
	if err != nil {
		q.log().Warn("reading the fleet's held domains", zap.Error(err))
		return
	}
	want := make(map[string]bool, len(list))
	for _, d := range list {
		want[d] = true
	}
	have := q.HeldDomains()
	for _, d := range list {
		if !slices.Contains(have, d) {
			ok, err := q.changeHeldDomainSince(d, true, &gen)
			if err != nil {
				q.log().Warn("holding a domain another node held", zap.String("domain", d), zap.Error(err))
			}
			if !ok {
				return
			}
		}
	}
	for _, d := range have {
		if !want[d] {
			ok, err := q.changeHeldDomainSince(d, false, &gen)
			if err != nil {
				q.log().Warn("releasing a domain another node released", zap.String("domain", d), zap.Error(err))
			}
			if !ok {
				return
			}
			if err == nil {
				q.releaseDue(d)
			}
		}
	}
}

// claimsInDoubt reports whether a due entry must wait because this
// node's claims are in doubt, and reschedules it; q.mu must be held.
func (q *Queue) claimsInDoubt(e *entry, now time.Time) bool {
	c, ok := q.store.(Claimer)
	if !ok || c.Holds() {
		return false
	}
	q.schedule(e, now.Add(time.Second))
	return true
}

// markDelivering tells a shared store that a delivery of message id starts.
func (q *Queue) markDelivering(id string) {
	if c, ok := q.store.(Claimer); ok {
		if err := c.Delivering(id); err != nil {
			q.log().Warn("marking a message in delivery", zap.String("msg_id", id), zap.Error(err))
		}
	}
}
