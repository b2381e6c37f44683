package queue

// Administrative operations: listing, reading, flushing, holding, releasing
// and deleting messages, and holding whole recipient domains.
//
// Where an entry is, at any time:
//
//   - on the due heap: idle, waiting for its next attempt;
//   - in a delivery round: from dispatch (or expiry) until finish has saved
//     and rescheduled it, or removed it;
//   - parked: off the heap because it must not be dispatched now. runDue
//     parks an entry it pops when it is held, when every pending recipient
//     is in a held domain, or when an administrative operation has claimed
//     it.
//
// An operation that changes what is stored for a message (hold, release,
// delete) first claims it: it waits until no round of that message is
// running, then takes it off the heap. While claimed, no round can start, so
// the operation can change and save the message without racing a delivery.
// Rounds are never interrupted: a hold or delete that finds the message
// being delivered waits for the round to finish (bounded by the caller's
// context) and then acts on what is left.

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Errors of the administrative operations.
var (
	// ErrNotFound means no queued message has the given ID (it may have
	// been delivered meanwhile).
	ErrNotFound = errors.New("no such message in the queue")
	// ErrHeld means the message cannot be flushed: it is held, or every
	// recipient it still has is in a held domain.
	ErrHeld = errors.New("message is held")
	// ErrBusy means a delivery round of the message did not finish before
	// the caller's context ended; nothing was changed.
	ErrBusy = errors.New("message is being delivered")
	// ErrClosed means the queue is shutting down.
	ErrClosed = errors.New("queue is closed")
	// ErrInvalidDomain means a domain given to HoldDomain or ReleaseDomain
	// is not a domain name.
	ErrInvalidDomain = errors.New("invalid domain")
)

// adminState is the part of the Queue that the administrative operations
// keep; every field is guarded by Queue.mu except domainsMu.
type adminState struct {
	heldDomains map[string]bool
	parked      map[string]*entry // off the heap, not in a round
	claimed     map[string]bool   // owned by an administrative operation
	changed     chan struct{}     // closed (and replaced) when a round ends or a claim is released
	waiters     int               // goroutines waiting on changed

	// sweepAt is when the next quarantined message reaches the end of its
	// retention (zero: none is quarantined); valid while sweepKnown.
	sweepAt    time.Time
	sweepKnown bool

	domainsMu sync.Mutex // serialises changes of the held-domain set
	// domainsGen counts the changes of the held-domain set (under
	// domainsMu), so that a fleet sync does not apply a list read before
	// a change made here.
	domainsGen uint64
}

// DomainHoldStore is implemented by stores that keep the set of held
// recipient domains across restarts (the files and segments stores do).
// With a store that does not, held domains last until the process exits.
type DomainHoldStore interface {
	// LoadHeldDomains returns the saved set; nil when none was saved.
	LoadHeldDomains() ([]string, error)
	// SaveHeldDomains durably replaces the saved set.
	SaveHeldDomains(domains []string) error
}

// initAdmin prepares the administrative state and loads the held domains;
// it runs in New before the scheduling loop starts.
func (q *Queue) initAdmin() {
	q.admin.heldDomains = make(map[string]bool)
	q.admin.parked = make(map[string]*entry)
	q.admin.claimed = make(map[string]bool)
	q.admin.changed = make(chan struct{})
	hs, ok := q.store.(DomainHoldStore)
	if !ok {
		return
	}
	domains, err := hs.LoadHeldDomains()
	if err != nil {
		q.log().Error("loading held domains", zap.Error(err))
	}
	for _, d := range domains {
		if n, err := NormalizeDomain(d); err == nil {
			q.admin.heldDomains[n] = true
		}
	}
	if len(q.admin.heldDomains) > 0 {
		q.log().Warn("delivery held for domains", zap.Strings("domains", q.heldDomainList()))
	}
}

// park keeps an entry that runDue popped off the heap when it must not be
// dispatched; q.mu must be held.
func (q *Queue) park(e *entry) bool {
	if !q.mustPark(e) {
		return false
	}
	q.admin.parked[e.id] = e
	q.noteQuarantined(e)
	return true
}

// mustPark reports whether an entry must not be dispatched now; q.mu must
// be held.
func (q *Queue) mustPark(e *entry) bool {
	return q.admin.claimed[e.id] || e.held || q.onlyHeldDomains(e)
}

// onlyHeldDomains reports whether every recipient still pending is in a
// held domain (and there is one, and no DSN is owed); q.mu must be held.
func (q *Queue) onlyHeldDomains(e *entry) bool {
	if len(q.admin.heldDomains) == 0 || e.dsnOwed {
		return false
	}
	pending, held := 0, true
	e.pendingDomains(func(d string) bool {
		pending++
		held = q.admin.heldDomains[d]
		return held
	})
	return pending > 0 && held
}

// dispatchable returns the pending recipients whose domain is not held;
// q.mu must be held.
func (q *Queue) dispatchable(m *Message) []*Recipient {
	pending := m.Pending()
	if len(q.admin.heldDomains) == 0 {
		return pending
	}
	out := pending[:0]
	for _, r := range pending {
		if !q.admin.heldDomains[Domain(r.Addr)] {
			out = append(out, r)
		}
	}
	return out
}

// idle reports whether no delivery round of e is running; q.mu must be held.
// Between the end of its last job and the end of finish an entry is neither
// on the heap nor parked: it still counts as in its round.
func (q *Queue) idle(e *entry) bool {
	return e.inflight == 0 && (e.index >= 0 || q.admin.parked[e.id] == e)
}

// roundEnded wakes operations waiting for a round to finish. finish defers
// it, so it runs once the entry is back on the heap or removed.
// slot: the round held one of maxRounds.
func (q *Queue) roundEnded(slot bool) {
	q.mu.Lock()
	more := false
	if slot {
		q.rounds--
		more = q.rounds+1 >= q.maxRounds // runDue stopped there and set no timer
	}
	q.broadcast()
	q.mu.Unlock()
	if more {
		q.kick()
	}
}

// broadcast wakes every waiter; q.mu must be held.
func (q *Queue) broadcast() {
	if q.admin.waiters == 0 {
		return
	}
	close(q.admin.changed)
	q.admin.changed = make(chan struct{})
}

// isClosing reports whether Close has started.
func (q *Queue) isClosing() bool {
	select {
	case <-q.closing:
		return true
	default:
		return false
	}
}

// claim gives the caller sole ownership of a message: it waits until no
// round of the message runs (and no other operation owns it), then parks
// it, its envelope loaded. The caller must unclaim or drop it.
func (q *Queue) claim(ctx context.Context, id string) (*entry, error) {
	return q.claimEntry(ctx, id, true)
}

// claimEntry is claim; without load, e.msg is nil when the message is at
// rest (for an operation that needs only its id, so that it works on a
// message whose envelope cannot be read).
func (q *Queue) claimEntry(ctx context.Context, id string, load bool) (*entry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	owned := false
	for {
		e := q.entries[id]
		switch {
		case q.isClosing():
			if owned {
				q.disown(id)
			}
			return nil, ErrClosed
		case e == nil:
			if owned {
				q.disown(id)
			}
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		case !owned && !q.admin.claimed[id]:
			q.admin.claimed[id] = true
			owned = true
		}
		if owned && q.idle(e) {
			if e.index >= 0 {
				heap.Remove(&q.due, e.index) // e.due keeps its time
			}
			q.admin.parked[id] = e
			if !load {
				return e, nil
			}
			q.mu.Unlock()
			_, err := q.load(e)
			q.mu.Lock()
			if err != nil {
				q.disown(id)
				return nil, fmt.Errorf("reading message %s: %w", id, err)
			}
			return e, nil
		}
		changed := q.admin.changed
		q.admin.waiters++
		q.mu.Unlock()
		var err error
		select {
		case <-changed:
		case <-ctx.Done():
			err = ctx.Err()
		case <-q.closing:
		}
		q.mu.Lock()
		q.admin.waiters--
		if err != nil {
			if owned {
				q.disown(id)
			}
			return nil, fmt.Errorf("%w: %s: %w", ErrBusy, id, err)
		}
	}
}

// disown gives up a claim; the entry goes back on the heap (due at its old
// time) unless it must stay parked. q.mu must be held.
func (q *Queue) disown(id string) {
	delete(q.admin.claimed, id)
	if e := q.entries[id]; e != nil {
		q.settle(e, e.due)
	}
	q.broadcast()
	q.kick()
}

// unclaim ends the ownership that claim gave; the entry is due at `at`
// unless it must stay parked.
func (q *Queue) unclaim(e *entry, at time.Time) {
	q.mu.Lock()
	delete(q.admin.claimed, e.id)
	q.rest(e)
	q.settle(e, at)
	q.broadcast()
	q.mu.Unlock()
	q.kick()
}

// settle puts a parked entry back on the heap, due at `at`, unless it must
// stay parked; q.mu must be held.
func (q *Queue) settle(e *entry, at time.Time) {
	if q.admin.parked[e.id] != e {
		return
	}
	if q.mustPark(e) {
		q.noteQuarantined(e) // a sweep skips claimed entries
		return
	}
	delete(q.admin.parked, e.id)
	q.schedule(e, at)
}

// config returns the configuration in force, or the defaults when no
// config is attached.
func (q *Queue) config() Config {
	q.mu.Lock()
	defer q.mu.Unlock()
	if b := q.current(); b != nil {
		return b.cfg
	}
	var cfg Config
	cfg.setDefaults()
	return cfg
}

// Flush makes a message due now, or every message when id is "", and wakes
// the scheduler; it returns how many messages were made due. A message that
// is being delivered is left to its round. Held messages stay held: flushing
// one by ID (or one whose pending recipients are all in held domains)
// returns an error wrapping ErrHeld.
func (q *Queue) Flush(id string) (int, error) {
	q.mu.Lock()
	now := time.Now()
	n := 0
	if id == "" {
		for _, e := range q.due {
			e.due = now
			if !q.onlyHeldDomains(e) {
				n++
			}
		}
		heap.Init(&q.due)
	} else {
		e := q.entries[id]
		switch {
		case e == nil:
			q.mu.Unlock()
			return 0, fmt.Errorf("%w: %s", ErrNotFound, id)
		case e.held:
			q.mu.Unlock()
			return 0, fmt.Errorf("%w: %s: release it first", ErrHeld, id)
		case q.onlyHeldDomains(e):
			q.mu.Unlock()
			return 0, fmt.Errorf("%w: %s: every pending recipient is in a held domain", ErrHeld, id)
		case e.index >= 0:
			q.schedule(e, now)
			n = 1
		}
	}
	q.mu.Unlock()
	q.kick()
	q.log().Info("queue flushed", zap.String("msg_id", id), zap.Int("messages", n))
	return n, nil
}

// Hold stops the delivery of a message until Release. A round that is
// running is not interrupted: Hold waits for it (as long as ctx allows; then
// it returns an error wrapping ErrBusy and changes nothing). The hold is
// saved with the message, so it survives a restart. A held message does not
// expire; after its release it is bounced at once if it is older than the
// queue's maximum age (a message released from quarantine is as old as its
// release).
func (q *Queue) Hold(ctx context.Context, id string) error {
	q.mu.Lock()
	e := q.entries[id]
	already := e != nil && e.held
	q.mu.Unlock()
	if already {
		return nil
	}
	e, err := q.claim(ctx, id)
	if err != nil {
		return err
	}
	return q.setHeld(e, true)
}

// Release ends the hold of a message and makes it due now.
func (q *Queue) Release(id string) error {
	q.mu.Lock()
	e := q.entries[id]
	held := e != nil && e.held
	q.mu.Unlock()
	if e == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if !held {
		return nil
	}
	// A held message has no round, so the claim does not wait.
	e, err := q.claim(context.Background(), id)
	if err != nil {
		return err
	}
	return q.setHeld(e, false)
}

// setHeld changes and saves the hold flag of a claimed message, then
// unclaims it: a held message stays parked, a released one is due now.
func (q *Queue) setHeld(e *entry, held bool) error {
	m := e.msg
	q.mu.Lock()
	was, wasQuarantine := m.Held, m.Quarantine
	if !held && m.quarantined() {
		// The quarantine stays as history; the message's maximum age
		// counts from now.
		released := *m.Quarantine
		released.Released = time.Now()
		m.Quarantine = &released
	}
	m.Held = held
	q.mu.Unlock()
	var err error
	if was != held {
		if err = q.store.Save(m); err != nil {
			q.mu.Lock()
			m.Held, m.Quarantine = was, wasQuarantine
			q.mu.Unlock()
			err = fmt.Errorf("saving message %s: %w", m.ID, err)
		}
	}
	at := e.due
	if !held {
		at = time.Now()
	}
	q.unclaim(e, at)
	if err == nil {
		verb := "message held"
		if !held {
			verb = "message released"
		}
		q.log().Info(verb, zap.String("msg_id", m.ID))
	}
	return err
}

// Delete removes a message from the queue. A round that is running is not
// interrupted: Delete waits for it (as long as ctx allows; then it returns
// an error wrapping ErrBusy and deletes nothing) and deletes what is left;
// a message that the round finished is gone already (ErrNotFound).
//
// With bounce, the sender gets a DSN (through the same path as delivery
// failures) that reports every recipient still pending as failed with
// `5.0.0 deleted by the administrator`, together with any DSN the message
// still owed; the DSN is queued before the message is removed. Delete
// returns the number of recipients the DSN reports.
func (q *Queue) Delete(ctx context.Context, id string, bounce bool) (int, error) {
	// Without bounce only the id is needed: a message whose envelope
	// cannot be read can be deleted too.
	e, err := q.claimEntry(ctx, id, bounce)
	if err != nil {
		return 0, err
	}
	reported := 0
	if bounce {
		if reported, err = q.bounceDeleted(e.msg); err != nil {
			q.unclaim(e, e.due)
			return 0, err
		}
	}
	if err := q.store.Remove(e.id); err != nil {
		// Without bounce the message stays as it was. With bounce its
		// recipients are final now and the DSN is queued: the next round
		// finds nothing to do and removes it (so memory stays ahead of
		// the store).
		q.mu.Lock()
		e.dirty = e.dirty || bounce
		q.mu.Unlock()
		q.unclaim(e, e.due)
		return 0, fmt.Errorf("removing message %s: %w", e.id, err)
	}
	q.mu.Lock()
	delete(q.entries, e.id)
	delete(q.admin.parked, e.id)
	delete(q.admin.claimed, e.id)
	q.broadcast()
	q.mu.Unlock()
	q.log().Info("message deleted by the administrator", zap.String("msg_id", e.id),
		zap.Bool("bounce", bounce), zap.Int("dsn_rcpts", reported))
	return reported, nil
}

// deletedReply is what a DSN reports for a recipient whose message was
// deleted.
const deletedReply = "550 5.0.0 deleted by the administrator"

// bounceDeleted fails the pending recipients of a claimed message and
// queues the DSN owed for them (and any owed before). On failure the
// recipients are restored.
func (q *Queue) bounceDeleted(m *Message) (int, error) {
	cfg := q.config()
	q.mu.Lock()
	saved := make([]Recipient, len(m.Recipients))
	var report []*Recipient
	for i, r := range m.Recipients {
		saved[i] = *r
		if r.Status == Pending {
			r.Status = Failed
			r.LastReply, r.Enhanced, r.RemoteMTA = deletedReply, "5.0.0", ""
			r.DSNPending = reportsFailure(m, r, cfg)
		}
		if r.DSNPending {
			report = append(report, r)
		}
	}
	q.mu.Unlock()
	if len(report) == 0 {
		return 0, nil
	}
	if err := q.notify(m, report, cfg); err != nil {
		q.mu.Lock()
		for i, r := range m.Recipients {
			*r = saved[i]
		}
		q.mu.Unlock()
		return 0, fmt.Errorf("queueing DSN for message %s: %w", m.ID, err)
	}
	q.mu.Lock()
	for _, r := range report {
		r.DSNPending = false
	}
	q.mu.Unlock()
	return len(report), nil
}

// HoldDomain stops delivery to the recipients of a domain (the exact
// domain, not its subdomains) until ReleaseDomain. Rounds that are running
// are not interrupted. The set of held domains is saved when the store
// implements DomainHoldStore.
func (q *Queue) HoldDomain(domain string) error {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return err
	}
	return q.changeHeldDomain(d, true)
}

// ReleaseDomain resumes delivery to the recipients of a domain and makes
// every message with a pending recipient there due now.
func (q *Queue) ReleaseDomain(domain string) error {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return err
	}
	if err := q.changeHeldDomain(d, false); err != nil {
		return err
	}
	q.releaseDue(d)
	return nil
}

// releaseDue makes every message with a pending recipient in the released
// domain d due now.
func (q *Queue) releaseDue(d string) {
	q.mu.Lock()
	now := time.Now()
	for _, e := range q.due {
		if hasPendingIn(e, d) {
			e.due = now
		}
	}
	heap.Init(&q.due)
	for _, e := range q.admin.parked {
		if !q.admin.claimed[e.id] {
			q.settle(e, now)
		}
	}
	q.mu.Unlock()
	q.kick()
}

// changeHeldDomain adds a domain to the held set or removes it, and saves
// the set; on failure the change is undone.
func (q *Queue) changeHeldDomain(d string, held bool) error {
	_, err := q.changeHeldDomainSince(d, held, nil)
	return err
}

// changeHeldDomainSince is changeHeldDomain; with gen, only if the set has
// not changed since *gen was read from domainsGen (ok false otherwise),
// and *gen follows the change.
func (q *Queue) changeHeldDomainSince(d string, held bool, gen *uint64) (ok bool, err error) {
	if q.isClosing() {
		return false, ErrClosed
	}
	q.admin.domainsMu.Lock()
	defer q.admin.domainsMu.Unlock()
	if gen != nil && *gen != q.admin.domainsGen {
		return false, nil
	}
	q.mu.Lock()
	if q.admin.heldDomains[d] == held {
		q.mu.Unlock()
		return true, nil
	}
	set := func(v bool) {
		if v {
			q.admin.heldDomains[d] = true
		} else {
			delete(q.admin.heldDomains, d)
		}
	}
	set(held)
	list := q.heldDomainList()
	q.mu.Unlock()
	if hs, ok := q.store.(DomainHoldStore); ok {
		if err := hs.SaveHeldDomains(list); err != nil {
			q.mu.Lock()
			set(!held)
			q.mu.Unlock()
			return true, fmt.Errorf("saving held domains: %w", err)
		}
	} else {
		q.log().Warn("the store cannot save held domains; they last until restart")
	}
	q.admin.domainsGen++
	if gen != nil {
		*gen = q.admin.domainsGen
	}
	verb := "domain held"
	if !held {
		verb = "domain released"
	}
	q.log().Info(verb, zap.String("domain", d))
	return true, nil
}

// HeldDomains returns the held domains, sorted.
func (q *Queue) HeldDomains() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.heldDomainList()
}

// heldDomainList returns the held domains, sorted; q.mu must be held.
func (q *Queue) heldDomainList() []string {
	out := make([]string, 0, len(q.admin.heldDomains))
	for d := range q.admin.heldDomains {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

func hasPendingIn(e *entry, domain string) bool {
	found := false
	e.pendingDomains(func(d string) bool {
		found = d == domain
		return !found
	})
	return found
}

// NormalizeDomain returns a domain given by an administrator as the queue
// compares it with recipient domains (lowercase, no leading '@', no
// trailing dot), or an error wrapping ErrInvalidDomain.
func NormalizeDomain(d string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(d), "@"), "."))
	if n == "" || len(n) > 253 || strings.ContainsAny(n, "@/\\") ||
		strings.ContainsFunc(n, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", fmt.Errorf("%w: %q", ErrInvalidDomain, d)
	}
	return n, nil
}

// Message states in a Snapshot.
const (
	StateQueued     = "queued"      // waiting for its first attempt
	StateDeferred   = "deferred"    // an attempt failed temporarily; waiting to retry
	StateDelivering = "delivering"  // a delivery round is running
	StateHeld       = "held"        // held by an administrator
	StateQuarantine = "quarantined" // held because a check quarantined it
	StateDomainHeld = "domain_held" // every pending recipient is in a held domain
	StateUnreadable = "unreadable"  // its envelope cannot be read from the store (LastError says why)
)

// Snapshot describes a queued message at one moment, for listings.
type Snapshot struct {
	// ID is the queue ID of the message.
	ID string `json:"id"`
	// Node is the fleet node that owns the message, in a fleet-wide
	// listing of a shared store (FleetSnapshots); empty otherwise.
	Node string `json:"node,omitempty"`
	// From is the envelope sender; "" for the null sender (DSNs).
	From string `json:"from"`
	// Recipients are the envelope recipients and where each stands.
	Recipients []RecipientSnapshot `json:"recipients"`
	// Size is the size of the stored message in bytes.
	Size int64 `json:"size"`
	// Arrived is when the message was accepted; AgeSeconds is how long ago.
	Arrived    time.Time `json:"arrived"`
	AgeSeconds int64     `json:"age_seconds"`
	// Attempts is the number of delivery rounds so far.
	Attempts int `json:"attempts"`
	// Requeued is when an administrator last requeued the message (its
	// retry backoff counts from then); absent if never.
	Requeued time.Time `json:"requeued,omitzero"`
	// NextAttempt is when the next round is due; absent while the message
	// is held or being delivered.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// State is queued, deferred, delivering, held, quarantined or
	// domain_held.
	State string `json:"state"`
	// Held is set while the message is held by an administrator.
	Held bool `json:"held"`
	// LastError is the last temporary failure of a pending recipient, or
	// else the failure of a bounced one.
	LastError string `json:"last_error,omitempty"`
	// Server is the SMTP server that accepted the message.
	Server string `json:"server,omitempty"`
	// Client describes the SMTP client that sent it.
	Client ClientInfo `json:"client"`
	// RequireTLS, SMTPUTF8, BodyType (BODY), Ret and EnvID are the MAIL
	// parameters.
	RequireTLS bool   `json:"require_tls,omitempty"`
	SMTPUTF8   bool   `json:"smtputf8,omitempty"`
	BodyType   string `json:"body_type,omitempty"`
	Ret        string `json:"ret,omitempty"`
	EnvID      string `json:"envid,omitempty"`
	// Checks are the results of the checks that judged the message.
	Checks []CheckResult `json:"checks,omitempty"`
	// Quarantine says which check quarantined the message, and why.
	Quarantine *Quarantine `json:"quarantine,omitempty"`
}

// RecipientSnapshot describes one recipient in a Snapshot.
type RecipientSnapshot struct {
	// Addr is the recipient address.
	Addr string `json:"addr"`
	// Status is pending, delivered or failed.
	Status string `json:"status"`
	// Held is set for a pending recipient whose domain is held.
	Held bool `json:"held,omitempty"`
	// LastReply is the last reply or error for this recipient.
	LastReply string `json:"last_reply,omitempty"`
	// RemoteMTA is the host that gave LastReply.
	RemoteMTA string `json:"remote_mta,omitempty"`
	// DSNPending is set while a DSN about this recipient is owed.
	DSNPending bool `json:"dsn_pending,omitempty"`
}

// Snapshots describes every queued message, oldest first.
func (q *Queue) Snapshots() []Snapshot {
	out := q.snapshots(nil)
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Arrived.Equal(out[j].Arrived) {
			return out[i].Arrived.Before(out[j].Arrived)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Snapshot describes one queued message.
func (q *Queue) Snapshot(id string) (Snapshot, error) {
	q.mu.Lock()
	e := q.entries[id]
	q.mu.Unlock()
	var out []Snapshot
	if e != nil {
		out = q.snapshots(func(x *entry) bool { return x == e })
	}
	if len(out) == 0 {
		return Snapshot{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return out[0], nil
}

// snapshots describes the entries that keep passes (every one when keep
// is nil), in no particular order. Those at rest in an IndexStore are
// read from it one by one, without holding q.mu (one removed meanwhile is
// left out); the state comes from the moment of the call.
func (q *Queue) snapshots(keep func(*entry) bool) []Snapshot {
	type atRest struct {
		e               *entry
		idle, scheduled bool
		due             time.Time
	}
	q.mu.Lock()
	now := time.Now()
	held := maps.Clone(q.admin.heldDomains)
	var out []Snapshot
	var rest []atRest
	for _, e := range q.entries {
		switch {
		case keep != nil && !keep(e):
		case e.msg != nil:
			out = append(out, describeEntry(e.msg, held, now, q.idle(e), e.index >= 0, e.due))
		default:
			rest = append(rest, atRest{e, q.idle(e), e.index >= 0, e.due})
		}
	}
	q.mu.Unlock()
	for _, r := range rest {
		for try := 0; ; try++ {
			m, err := q.idx.LoadMessage(r.e.id)
			if err != nil {
				if !errors.Is(err, os.ErrNotExist) { // not removed meanwhile
					out = append(out, q.describeUnreadable(r.e, err, now))
				}
				break
			}
			// A round may have run while the envelope was read: describe
			// the envelope with the state it goes with, reading it again
			// if the entry changed.
			q.mu.Lock()
			e := r.e
			same := q.entries[e.id] == e && e.msg == nil && q.idle(e) == r.idle &&
				(e.index >= 0) == r.scheduled && e.due.Equal(r.due)
			if !same && try < 3 {
				r = atRest{e, q.idle(e), e.index >= 0, e.due}
				if q.entries[e.id] != e {
					q.mu.Unlock()
					break // removed meanwhile
				}
				if e.msg != nil {
					out = append(out, describeEntry(e.msg, held, now, r.idle, r.scheduled, r.due))
					q.mu.Unlock()
					break
				}
				q.mu.Unlock()
				continue
			}
			q.mu.Unlock()
			out = append(out, describeEntry(m, held, now, r.idle, r.scheduled, r.due))
			break
		}
	}
	return out
}

// describeUnreadable describes a message at rest whose envelope cannot be
// read, from what its entry holds.
func (q *Queue) describeUnreadable(e *entry, err error, now time.Time) Snapshot {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := Snapshot{ID: e.id, Arrived: e.arrived, AgeSeconds: int64(now.Sub(e.arrived).Seconds()),
		State: StateUnreadable, Held: e.held, LastError: err.Error(), Recipients: []RecipientSnapshot{}}
	if e.index >= 0 {
		s.NextAttempt = e.due
	}
	return s
}

// describeEntry describes a queued message in the state of its entry.
func describeEntry(m *Message, held map[string]bool, now time.Time, idle, scheduled bool, due time.Time) Snapshot {
	s := Describe(m, held, now)
	if !idle && s.State != StateQuarantine && s.State != StateHeld {
		s.State = StateDelivering
	}
	s.NextAttempt = time.Time{}
	if scheduled && s.State != StateDomainHeld {
		s.NextAttempt = due
	}
	return s
}

// Describe describes a message as stored, for tools that read a spool
// without running a queue (`caddy smtp spool inspect`): heldDomains are
// the held recipient domains, the state is never delivering and
// NextAttempt is the stored one (absent while the message is held).
func Describe(m *Message, heldDomains map[string]bool, now time.Time) Snapshot {
	s := Snapshot{
		ID: m.ID, From: m.From, Size: m.Size, Arrived: m.Arrived,
		AgeSeconds: int64(now.Sub(m.Arrived) / time.Second), Attempts: m.Attempts,
		Held: m.Held, Server: m.Server, Client: m.Client, Requeued: m.Requeued,
		RequireTLS: m.RequireTLS, SMTPUTF8: m.SMTPUTF8, BodyType: m.Body, Ret: m.Ret, EnvID: m.EnvID,
		Checks: m.Checks, Quarantine: m.Quarantine,
		Recipients: make([]RecipientSnapshot, 0, len(m.Recipients)),
	}
	var failure string
	pending, heldPending, dsnOwed := 0, 0, false
	for _, r := range m.Recipients {
		rs := RecipientSnapshot{Addr: r.Addr, Status: string(r.Status), LastReply: r.LastReply,
			RemoteMTA: r.RemoteMTA, DSNPending: r.DSNPending}
		dsnOwed = dsnOwed || r.DSNPending
		switch r.Status {
		case Pending:
			rs.Status = "pending"
			rs.Held = heldDomains[Domain(r.Addr)]
			pending++
			if rs.Held {
				heldPending++
			}
			if s.LastError == "" {
				s.LastError = r.LastReply
			}
		case Failed:
			if failure == "" {
				failure = r.LastReply
			}
		}
		s.Recipients = append(s.Recipients, rs)
	}
	if s.LastError == "" {
		s.LastError = failure
	}
	switch {
	case m.quarantined():
		s.State = StateQuarantine
	case m.Held:
		s.State = StateHeld
	case pending > 0 && heldPending == pending && !dsnOwed: // as onlyHeldDomains
		s.State = StateDomainHeld
	case m.Attempts > 0:
		s.State = StateDeferred
	default:
		s.State = StateQueued
	}
	if s.State != StateHeld && s.State != StateQuarantine && s.State != StateDomainHeld {
		s.NextAttempt = m.NextAttempt
	}
	return s
}

// maxHeaderSize bounds what ReadHeader returns.
const maxHeaderSize = 1 << 20

// ReadHeader returns the header section of a queued message, without the
// empty line that ends it (at most 1 MiB).
func (q *Queue) ReadHeader(id string) ([]byte, error) {
	header, _, err := q.readMessage(id, false)
	return header, err
}

// ReadBody returns the body of a queued message: what follows the empty
// line after the header section.
func (q *Queue) ReadBody(id string) ([]byte, error) {
	_, body, err := q.readMessage(id, true)
	return body, err
}

func (q *Queue) readMessage(id string, withBody bool) (header, body []byte, err error) {
	q.mu.Lock()
	e, ok := q.entries[id]
	q.mu.Unlock()
	var m *Message
	if ok {
		m, err = q.stored(e)
	}
	if !ok || errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, nil, err
	}
	header, body, err = ReadStored(q.store, m, withBody)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return header, body, err
}

// BodyOpener opens stored bodies: a Store, or a spool opened read-only.
type BodyOpener interface {
	OpenBody(id string) (io.ReadCloser, error)
}

// ReadStored returns the header section of a stored message as it is
// delivered (with its Headers, without its DropHeaders), without the
// empty line that ends it (at most 1 MiB), and with withBody what follows
// that line.
func ReadStored(o BodyOpener, m *Message, withBody bool) (header, body []byte, err error) {
	f, err := openWithHeaders(o, m.ID, m.Headers, m.DropHeaders)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var h bytes.Buffer
	lineStart := true
	for h.Len() < maxHeaderSize {
		line, err := br.ReadSlice('\n')
		if lineStart && (string(line) == "\r\n" || string(line) == "\n") {
			break // the empty line: the body follows
		}
		h.Write(line)
		if errors.Is(err, bufio.ErrBufferFull) {
			lineStart = false // the rest of a long line follows
			continue
		}
		lineStart = true
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
	}
	if h.Len() > maxHeaderSize {
		h.Truncate(maxHeaderSize)
	}
	if !withBody {
		return h.Bytes(), nil, nil
	}
	body, err = io.ReadAll(br)
	return h.Bytes(), body, err
}
