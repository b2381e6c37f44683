package queue

// Quarantine retention: a quarantined message is held (parked, never
// dispatched, never expired by MaxAge) until an administrator releases or
// deletes it, or until Config.QuarantineRetention after its quarantine,
// when the scheduler deletes it without a DSN. The scheduler knows the
// earliest end of a retention (adminState.sweepAt) and wakes for it; it
// scans the parked messages only when that time has come or the
// configuration changed.

import (
	"sort"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// quarantined reports whether a check quarantined the message and no
// administrator has released it since; q.mu must be held (or the message
// not shared yet).
func (m *Message) quarantined() bool {
	return m.Held && m.Quarantine != nil && m.Quarantine.Released.IsZero()
}

// quarantined is Message.quarantined for an entry; q.mu must be held.
func (e *entry) quarantined() bool {
	return e.held && e.quar != nil && e.quar.Released.IsZero()
}

// ageStart is when the message's maximum age starts: its arrival, or the
// release from its quarantine (a message kept for days in quarantine and
// then released is delivered, not bounced as too old).
func (e *entry) ageStart() time.Time {
	if e.quar != nil && !e.quar.Released.IsZero() {
		return e.quar.Released
	}
	return e.arrived
}

// quarantineEnd is when the retention of a quarantined message ends.
func (e *entry) quarantineEnd(retention time.Duration) time.Time {
	start := e.quar.At
	if start.IsZero() {
		start = e.arrived
	}
	return start.Add(retention)
}

// noteQuarantined moves the next sweep earlier when a parked entry is a
// quarantined message whose retention ends first; q.mu must be held.
func (q *Queue) noteQuarantined(e *entry) {
	b := q.current()
	if !e.quarantined() || !q.admin.sweepKnown || b == nil {
		return // when not known, the next runDue scans anyway
	}
	end := e.quarantineEnd(b.cfg.QuarantineRetention)
	if q.admin.sweepAt.IsZero() || end.Before(q.admin.sweepAt) {
		q.admin.sweepAt = end
	}
}

// sweepQuarantine deletes, in the background, the parked quarantined
// messages whose retention has ended, and returns when the next one ends
// (zero if none is quarantined); q.mu must be held.
func (q *Queue) sweepQuarantine(now time.Time, cfg Config) time.Time {
	if q.isClosing() {
		return time.Time{}
	}
	if q.admin.sweepKnown && (q.admin.sweepAt.IsZero() || now.Before(q.admin.sweepAt)) {
		return q.admin.sweepAt
	}
	var next time.Time
	var drop []*entry
	for id, e := range q.admin.parked {
		if q.admin.claimed[id] || !e.quarantined() {
			continue
		}
		end := e.quarantineEnd(cfg.QuarantineRetention)
		if !end.After(now) {
			q.admin.claimed[id] = true // parked entries are idle: no round to wait for
			drop = append(drop, e)
			continue
		}
		if next.IsZero() || end.Before(next) {
			next = end
		}
	}
	q.admin.sweepAt, q.admin.sweepKnown = next, true
	if len(drop) > 0 {
		q.wg.Add(1)
		go q.dropQuarantined(drop, cfg.QuarantineRetention)
	}
	return next
}

// dropQuarantined deletes claimed quarantined messages whose retention
// ended. A message the store fails to remove stays quarantined and is
// tried again a minute later.
func (q *Queue) dropQuarantined(drop []*entry, retention time.Duration) {
	defer q.wg.Done()
	for _, e := range drop {
		err := q.store.Remove(e.id)
		q.mu.Lock()
		delete(q.admin.claimed, e.id)
		quar := e.quar
		if err == nil {
			quarantineDeleted.Add(1) // before the message is seen gone
			delete(q.entries, e.id)
			delete(q.admin.parked, e.id)
		} else if retry := time.Now().Add(time.Minute); q.admin.sweepKnown && (q.admin.sweepAt.IsZero() || retry.Before(q.admin.sweepAt)) {
			q.admin.sweepAt = retry
		}
		q.broadcast()
		q.mu.Unlock()
		if err != nil {
			q.log().Error("deleting quarantined message", zap.String("msg_id", e.id), zap.Error(err))
			continue
		}
		q.log().Info("quarantined message deleted after its retention", zap.String("msg_id", e.id),
			zap.String("check", quar.Check), zap.Time("quarantined", quar.At),
			zap.Duration("retention", retention))
	}
	q.kick() // the next sweep time may have changed
}

// quarantineDeleted counts the messages deleted at the end of their
// retention, by every queue of the process.
var quarantineDeleted atomic.Uint64

// QuarantineDeleted returns how many quarantined messages the queues of
// this process deleted at the end of their retention (for metrics).
func QuarantineDeleted() uint64 { return quarantineDeleted.Load() }

// Quarantined describes the quarantined messages, newest quarantine first.
func (q *Queue) Quarantined() []Snapshot {
	out := q.snapshots((*entry).quarantined)
	sort.Slice(out, func(i, j int) bool {
		if a, b := out[i].Quarantine.At, out[j].Quarantine.At; !a.Equal(b) {
			return a.After(b)
		}
		return out[i].ID < out[j].ID
	})
	return out
}
