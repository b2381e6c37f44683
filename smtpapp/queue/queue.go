package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"go.uber.org/zap"
)

// Config tunes the scheduler.
type Config struct {
	// MaxAge is how long a message is retried before its remaining
	// recipients bounce. Default: 5 days.
	MaxAge time.Duration
	// RetryInitial is the delay before the first retry; each further retry
	// waits twice as long, up to RetryMax, with ±20% jitter.
	// Defaults: 1 minute and 2 hours.
	RetryInitial, RetryMax time.Duration
	// Workers is the most delivery sessions open at once. Default: 64.
	Workers int
	// PerDestination is the most sessions open to one destination (one
	// relay, one recipient domain). Default: 8.
	PerDestination int
	// MessagesPerSession is the most messages sent over one session before
	// it is closed and a new one opened. Default: 100.
	MessagesPerSession int
	// IdleTimeout is how long an open session waits for another message
	// to its destination before it is closed. Default: 2 seconds.
	IdleTimeout time.Duration
	// Hostname names us in DSNs (Reporting-MTA, MAILER-DAEMON@...).
	Hostname string
	// MaxReturnSize is the largest original returned whole in a DSN for
	// RET=FULL; larger ones return headers only. Default: 1 MiB.
	MaxReturnSize int64
	// DelayWarning is how long a message may wait before its senders get
	// one delayed DSN (RFC 3464 action=delayed) per recipient that asked
	// for it (NOTIFY=DELAY, or no NOTIFY). 0: none.
	DelayWarning time.Duration
	// OnDelivery, when set, is told the outcome of every recipient's
	// delivery attempt (the recipient, "delivered", "deferred" or
	// "bounced", the error and the session's log fields), for metrics. It
	// must not block.
	OnDelivery func(rcpt, status string, err error, session []zap.Field)
	// Postmaster gets the DSNs that cannot go to a sender: a failed DSN
	// (a double bounce) is reported to it, instead of being dropped. "":
	// dropped, with a warning in the log.
	Postmaster string
	// QuarantineRetention is how long a quarantined message is kept
	// (counted from its quarantine) before it is deleted, without a DSN.
	// Default: 15 days.
	QuarantineRetention time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxAge <= 0 {
		c.MaxAge = 5 * 24 * time.Hour
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = time.Minute
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 2 * time.Hour
	}
	if c.RetryMax < c.RetryInitial {
		c.RetryMax = c.RetryInitial
	}
	if c.Workers <= 0 {
		c.Workers = 64
	}
	if c.PerDestination <= 0 {
		c.PerDestination = 8
	}
	if c.MessagesPerSession <= 0 {
		c.MessagesPerSession = 100
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 2 * time.Second
	}
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MaxReturnSize <= 0 {
		c.MaxReturnSize = 1 << 20
	}
	if c.QuarantineRetention <= 0 {
		c.QuarantineRetention = 15 * 24 * time.Hour
	}
}

// Router chooses the target for a recipient of a message.
type Router interface {
	Route(m *Message, rcpt string) Target
}

// RouterFunc adapts a function to Router.
type RouterFunc func(m *Message, rcpt string) Target

// Route implements Router.
func (f RouterFunc) Route(m *Message, rcpt string) Target { return f(m, rcpt) }

// Queue is the scheduler over a Store: one loop picks due messages, groups
// their pending recipients by destination and hands them to a bounded pool
// of delivery workers; each worker keeps a session open and delivers queued
// messages for its destination one after the other.
type Queue struct {
	store  Store
	idx    IndexStore // store, when it reads envelopes on demand; else nil
	logger atomic.Pointer[zap.Logger]

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	wake    chan struct{}
	closing chan struct{} // closed when Close starts: idle sessions end
	wg      sync.WaitGroup

	mu       sync.Mutex
	bindings []*binding // the last one is in force
	entries  map[string]*entry
	due      dueHeap
	dests    map[destKey]*dest
	active   int
	rounds   int // delivery rounds started for messages read from the store, not finished
	// maxRounds bounds the rounds started at once for messages at rest
	// (and so the envelopes read for them): a flush of a million deferred
	// messages starts them as rounds finish, not all at once. A message
	// whose envelope is in memory anyway (new mail) takes no slot.
	// Default: defaultMaxRounds.
	maxRounds int
	// keyRounds counts those rounds by the pending domains of their
	// messages (entry.domains); at maxKeyRounds for one set of domains,
	// its messages wait keyDelay more, so that a backlog for one slow
	// destination takes at most maxKeyRounds of the maxRounds slots.
	keyRounds    map[unique.Handle[string]]int
	keyWaves     map[unique.Handle[string]]*keyWave // putOff
	maxKeyRounds int
	keyDelay     time.Duration

	admin adminState // holds, claims and parked messages (admin.go)
}

type binding struct {
	router Router
	cfg    Config
}

// entry is a message known to the scheduler. With an IndexStore, msg is
// loaded only for a delivery round or an administrative operation and
// released once the message is at rest again, its state saved; the other
// fields are what scheduling needs meanwhile (see note).
type entry struct {
	id       string
	msg      *Message // nil while at rest in an IndexStore
	due      time.Time
	index    int // in the due heap; -1 when not scheduled
	inflight int // recipient groups being delivered

	arrived time.Time
	quar    *Quarantine           // Message.Quarantine
	domains unique.Handle[string] // pending recipient domains, joined by "\x00"
	held    bool                  // Message.Held
	dsnOwed bool                  // a recipient's DSNPending
	dirty   bool                  // msg is ahead of what is stored: keep it
	slot    bool                  // its round holds one of maxRounds (its envelope was read for it)
	slotKey unique.Handle[string] // with slot: the domains its round counts for (keyRounds)
	unread  uint8                 // reads of its envelope that failed in a row
}

// defaultMaxRounds is Queue.maxRounds. A round holds its slot until it
// ends, also while its jobs wait for a busy destination; a flush or a
// restart after an outage still reads at most this many envelopes (about
// 3 KB each in memory) at once.
const defaultMaxRounds = 65536

// defaultMaxKeyRounds is Queue.maxKeyRounds: the rounds of messages read
// back for one slow destination (one set of pending domains) take at most
// this many slots, so the messages at rest for other destinations are
// never held up behind them. defaultKeyDelay is how much later the first
// maxKeyRounds messages over that come due again (the next as many one
// delay later, and so on, see putOff): a backlog to one fast destination
// (a gateway's own mail server after an outage) still drains at up to
// maxKeyRounds per delay, 16,000 a second, while a stuck destination
// costs about maxKeyRounds heap operations per delay.
const (
	defaultMaxKeyRounds = 4096
	defaultKeyDelay     = 250 * time.Millisecond
)

// note records what scheduling needs of x; q.mu must be held (or the
// entry not shared yet).
func (e *entry) note(x Index) {
	e.id, e.arrived, e.quar, e.held, e.dsnOwed = x.ID, x.Arrived, x.Quarantine, x.Held, x.DSNPending
	if len(x.Domains) == 1 {
		e.domains = unique.Make(x.Domains[0]) // most messages: no string to build
	} else {
		e.domains = unique.Make(strings.Join(x.Domains, "\x00"))
	}
}

// pendingDomains calls fn with each domain of a pending recipient until
// it returns false.
func (e *entry) pendingDomains(fn func(string) bool) {
	for rest := e.domains.Value(); rest != ""; {
		var d string
		d, rest, _ = strings.Cut(rest, "\x00")
		if !fn(d) {
			return
		}
	}
}

// rest notes the state of a loaded message and, with an IndexStore,
// releases it unless memory is ahead of the store; q.mu must be held.
func (q *Queue) rest(e *entry) {
	if e.msg == nil {
		return
	}
	e.note(IndexOf(e.msg))
	if q.idx != nil && !e.dirty {
		e.msg = nil
	}
}

// load returns the message of an entry that the caller owns (a round, a
// claim), reading it from the store when it is at rest.
func (q *Queue) load(e *entry) (*Message, error) {
	q.mu.Lock()
	m := e.msg
	q.mu.Unlock()
	if m != nil {
		return m, nil
	}
	m, err := q.idx.LoadMessage(e.id)
	if err != nil {
		return nil, err
	}
	m.store = q.store
	q.mu.Lock()
	e.msg = m
	q.mu.Unlock()
	return m, nil
}

// stored returns a copy of the message of an entry for reading, from
// memory or from the store, without loading it into the entry; q.mu must
// not be held.
func (q *Queue) stored(e *entry) (*Message, error) {
	q.mu.Lock()
	if m := e.msg; m != nil {
		c := *m
		c.Recipients = make([]*Recipient, len(m.Recipients))
		for i, r := range m.Recipients {
			rc := *r
			c.Recipients[i] = &rc
		}
		q.mu.Unlock()
		return &c, nil
	}
	q.mu.Unlock()
	m, err := q.idx.LoadMessage(e.id)
	if err != nil {
		return nil, err
	}
	m.store = q.store
	return m, nil
}

type destKey struct {
	target Target
	dest   string
}

// dest is the work queued for one destination.
type dest struct {
	key    destKey
	jobs   []*job
	active int
	more   chan struct{} // signalled when a job is queued
}

// job is the delivery of one message to some of its recipients.
type job struct {
	e     *entry
	rcpts []*Recipient
	// retried is set when the job goes back to its destination's queue
	// because a reused session turned out dead.
	retried bool
}

// New loads every message in the store and starts the scheduler. Nothing
// is delivered until a router is attached.
func New(store Store, logger *zap.Logger) (*Queue, error) {
	ctx, cancel := context.WithCancel(context.Background())
	q := &Queue{
		store:   store,
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		entries: make(map[string]*entry),
		dests:   make(map[destKey]*dest),

		maxRounds:    defaultMaxRounds,
		keyRounds:    make(map[unique.Handle[string]]int),
		keyWaves:     make(map[unique.Handle[string]]*keyWave),
		maxKeyRounds: defaultMaxKeyRounds,
		keyDelay:     defaultKeyDelay,
	}
	q.logger.Store(logger)
	q.initAdmin()
	now := time.Now()
	var loadErr error
	if is, ok := store.(IndexStore); ok {
		q.idx = is
		loadErr = is.LoadIndex(func(x Index) {
			e := &entry{index: len(q.due)}
			e.note(x)
			e.due = later(x.NextAttempt, now)
			q.due = append(q.due, e)
		})
		q.entries = make(map[string]*entry, len(q.due)) // no growth on the way
		for _, e := range q.due {
			q.entries[e.id] = e
		}
		heap.Init(&q.due)
	} else {
		var msgs []*Message
		msgs, loadErr = store.Load()
		for _, m := range msgs {
			q.addStored(m, now)
		}
	}
	if loadErr != nil {
		logger.Error("loading spool", zap.Error(loadErr))
	}
	if len(q.entries) > 0 {
		logger.Info("queue loaded", zap.Int("messages", len(q.entries)))
	}
	go q.loop()
	q.startClaims() // claim.go
	return q, nil
}

// addStored schedules a message read from the store when it is due (at
// once if that has passed); q.mu must be held or the loop not started.
func (q *Queue) addStored(m *Message, now time.Time) {
	m.store = q.store
	e := &entry{msg: m, index: -1}
	e.note(IndexOf(m))
	q.entries[m.ID] = e
	q.schedule(e, later(m.NextAttempt, now))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Attach puts a router and configuration in force (the newest attached
// wins) and returns a function that withdraws them. Config reloads attach
// the new config before detaching the old one.
func (q *Queue) Attach(r Router, cfg Config, logger *zap.Logger) (detach func()) {
	cfg.setDefaults()
	b := &binding{router: r, cfg: cfg}
	q.logger.Store(logger)
	q.mu.Lock()
	q.bindings = append(q.bindings, b)
	q.admin.sweepKnown = false // the retention may have changed
	q.mu.Unlock()
	q.kick()
	return func() {
		q.mu.Lock()
		for i, x := range q.bindings {
			if x == b {
				q.bindings = append(q.bindings[:i], q.bindings[i+1:]...)
				break
			}
		}
		q.admin.sweepKnown = false
		q.mu.Unlock()
	}
}

func (q *Queue) log() *zap.Logger { return q.logger.Load() }

// current returns the binding in force; q.mu must be held.
func (q *Queue) current() *binding {
	if len(q.bindings) == 0 {
		return nil
	}
	return q.bindings[len(q.bindings)-1]
}

// Create starts a new message with the given ID (see NewID).
func (q *Queue) Create(id string) (BodyWriter, error) {
	return q.store.Create(id)
}

// Commit makes a message durable and schedules it for immediate delivery.
// When Commit returns nil the message is on disk and fsynced.
func (q *Queue) Commit(w BodyWriter, m *Message) error { return q.CommitThen(w, m, nil) }

// CommitThen is Commit that calls committed (if not nil) once the message
// is durable and before the scheduler can deliver it: for the log line
// that must come before the delivery's.
func (q *Queue) CommitThen(w BodyWriter, m *Message, committed func()) error {
	m.NextAttempt = time.Time{}
	if err := w.Commit(m); err != nil {
		return err
	}
	if committed != nil {
		committed()
	}
	m.store = q.store
	e := &entry{msg: m, index: -1}
	e.note(IndexOf(m))
	q.mu.Lock()
	q.entries[m.ID] = e
	q.schedule(e, time.Now())
	q.mu.Unlock()
	q.kick()
	return nil
}

// StorageLow reports whether the store refuses new messages for want of
// space (false for stores that do not watch it).
func (q *Queue) StorageLow() bool {
	sw, ok := q.store.(SpaceWatcher)
	return ok && sw.StorageLow()
}

// Len returns the number of messages in the queue.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries)
}

// Messages returns a copy of every queued message's envelope and state,
// in no particular order.
func (q *Queue) Messages() []Message {
	out := make([]Message, 0, q.Len())
	for _, e := range q.entryList(nil) {
		if m, err := q.stored(e); err == nil {
			out = append(out, *m)
		}
	}
	return out
}

// entryList returns the entries that keep passes (all with nil); q.mu
// must not be held.
func (q *Queue) entryList(keep func(*entry) bool) []*entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]*entry, 0, len(q.entries))
	for _, e := range q.entries {
		if keep == nil || keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// Close stops the scheduler. Deliveries in progress may finish until ctx is
// done; then they are cancelled (their messages stay queued).
func (q *Queue) Close(ctx context.Context) error {
	select {
	case <-q.done:
		return nil
	default:
	}
	q.mu.Lock()
	q.bindings = nil // no new sessions
	q.mu.Unlock()
	close(q.closing)
	finished := make(chan struct{})
	go func() {
		q.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-ctx.Done():
		q.cancel()
		<-finished
	}
	q.cancel()
	<-q.done
	return q.store.Close()
}

func (q *Queue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// schedule puts an entry on the due heap; q.mu must be held.
func (q *Queue) schedule(e *entry, at time.Time) {
	e.due = at
	if e.index >= 0 {
		heap.Fix(&q.due, e.index)
		return
	}
	heap.Push(&q.due, e)
}

// loop is the one scheduling loop.
func (q *Queue) loop() {
	defer close(q.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := q.runDue()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), time.Millisecond))
		}
		select {
		case <-q.ctx.Done():
			return
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// runDue dispatches due messages, starts workers where work waits, and
// returns when the next message is due (zero if none is scheduled).
func (q *Queue) runDue() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.current() == nil {
		return time.Time{}
	}
	now := time.Now()
	var started []*entry
	putOff := 0 // entries put off by maxKeyRounds in this pass
	for q.due.Len() > 0 && !q.due[0].due.After(now) && (q.due[0].msg != nil || q.rounds < q.maxRounds) {
		e := heap.Pop(&q.due).(*entry)
		if q.park(e) {
			// Held or claimed: parked (admin.go). A held one (new mail
			// held or quarantined at once) waits at rest, its envelope
			// released; a claimed one is its owner's.
			if !q.admin.claimed[e.id] {
				q.rest(e)
			}
			continue
		}
		if q.claimsInDoubt(e, now) {
			continue // a fleet's store is unreachable (claim.go)
		}
		if e.msg == nil {
			if q.keyRounds[e.domains] >= q.maxKeyRounds {
				// Its destination has that many rounds of messages
				// read back already: later, leaving the slots to
				// others.
				q.putOff(e, now)
				if putOff++; putOff >= q.maxKeyRounds {
					break // the rest in the next pass, at once (q.mu is let go meanwhile)
				}
				continue
			}
			e.slot, e.slotKey = true, e.domains
			q.rounds++
			q.keyRounds[e.domains]++
		}
		e.inflight = 1 // its round has started: no claim, no second round
		started = append(started, e)
	}
	q.loadStarted(started)
	b := q.current()
	for _, e := range started {
		switch {
		case e.msg == nil:
			continue // not readable now (loadStarted)
		case b == nil:
			// Closed while the envelopes were read.
			q.abortRound(e, now)
		case now.Sub(e.ageStart()) > b.cfg.MaxAge:
			go q.expire(e, b.cfg)
		default:
			q.dispatch(e, b)
		}
	}
	if b == nil {
		return time.Time{}
	}
	q.startWorkers(b.cfg)
	next := q.sweepQuarantine(now, b.cfg) // quarantine.go
	// At maxRounds, the end of a round wakes the loop (roundEnded).
	if q.due.Len() > 0 && (q.due[0].msg != nil || q.rounds < q.maxRounds) && (next.IsZero() || q.due[0].due.Before(next)) {
		next = q.due[0].due
	}
	return next
}

// loadStarted reads the envelopes of the entries whose round runDue
// started, without holding q.mu (which it unlocks and locks again). An
// entry whose envelope cannot be read ends its round and is tried again
// later (or forgotten, when the store no longer has it).
func (q *Queue) loadStarted(started []*entry) {
	var cold []*entry
	for _, e := range started {
		if e.msg == nil {
			cold = append(cold, e)
		}
	}
	if len(cold) == 0 {
		return
	}
	q.mu.Unlock()
	msgs := make([]*Message, len(cold))
	errs := make([]error, len(cold))
	for i, e := range cold {
		msgs[i], errs[i] = q.idx.LoadMessage(e.id)
	}
	q.mu.Lock()
	now := time.Now()
	for i, e := range cold {
		if errs[i] == nil {
			msgs[i].store = q.store
			e.msg = msgs[i]
			e.unread = 0
			continue
		}
		q.log().Error("reading a queued message's envelope", zap.String("msg_id", e.id), zap.Error(errs[i]))
		if errors.Is(errs[i], os.ErrNotExist) {
			e.inflight = 0
			q.freeSlot(e)
			delete(q.entries, e.id)
			q.broadcast()
			continue
		}
		// Tried again after 1 minute, 2, 4, ... 64 minutes (it is
		// listed as unreadable meanwhile and can be deleted).
		e.unread = min(e.unread+1, 7)
		q.abortRound(e, now.Add(time.Minute<<(e.unread-1)))
	}
}

// abortRound ends a round that runDue started before it dispatched
// anything; the entry is due at `at`. q.mu must be held.
func (q *Queue) abortRound(e *entry, at time.Time) {
	e.inflight = 0
	q.freeSlot(e)
	q.schedule(e, at)
	q.broadcast()
}

// freeSlot gives back the maxRounds slot of e's round, if it took one,
// and reports whether it did; q.mu must be held.
func (q *Queue) freeSlot(e *entry) bool {
	if !e.slot {
		return false
	}
	e.slot = false
	q.rounds--
	q.keyDone(e)
	return true
}

// keyDone takes the ending round of e off keyRounds; q.mu must be held.
func (q *Queue) keyDone(e *entry) {
	if n := q.keyRounds[e.slotKey] - 1; n > 0 {
		q.keyRounds[e.slotKey] = n
	} else {
		delete(q.keyRounds, e.slotKey)
		if w := q.keyWaves[e.slotKey]; w != nil && !w.at.After(time.Now()) {
			// Only when its last wave has come due: until then, more
			// messages put off go after those already waiting.
			delete(q.keyWaves, e.slotKey)
		}
	}
	e.slotKey = unique.Handle[string]{}
}

// keyWave is the latest time messages put off by maxKeyRounds for one set
// of domains come due again, and how many do then.
type keyWave struct {
	at time.Time
	n  int
}

// putOff schedules e, whose domains have maxKeyRounds rounds already, in
// the first wave with room: a wave of maxKeyRounds messages per keyDelay,
// so that a backlog for a stuck destination comes back a wave at a time,
// not all of it every keyDelay. q.mu must be held.
func (q *Queue) putOff(e *entry, now time.Time) {
	w := q.keyWaves[e.domains]
	if w == nil {
		w = new(keyWave)
		q.keyWaves[e.domains] = w
	}
	switch soonest := now.Add(q.keyDelay); {
	case w.at.Before(soonest):
		w.at, w.n = soonest, 0
	case w.n >= q.maxKeyRounds:
		w.at, w.n = w.at.Add(q.keyDelay), 0
	}
	w.n++
	q.schedule(e, w.at)
}

// dispatch groups an entry's pending recipients by destination and queues
// one job per group; q.mu must be held.
func (q *Queue) dispatch(e *entry, b *binding) {
	groups := make(map[destKey][]*Recipient)
	var order []destKey
	for _, r := range q.dispatchable(e.msg) {
		t := b.router.Route(e.msg, r.Addr)
		k := destKey{target: t, dest: t.Destination(e.msg, r.Addr)}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	if len(order) == 0 {
		// Nothing to deliver, maybe a DSN to send: finish the round.
		e.inflight = 1
		go q.finish(e, b.cfg)
		return
	}
	e.inflight = len(order)
	for _, k := range order {
		d := q.dests[k]
		if d == nil {
			d = &dest{key: k, more: make(chan struct{}, 1)}
			q.dests[k] = d
		}
		d.jobs = append(d.jobs, &job{e: e, rcpts: groups[k]})
		select {
		case d.more <- struct{}{}:
		default:
		}
	}
}

// startWorkers opens sessions where jobs wait, within the limits; q.mu must
// be held.
func (q *Queue) startWorkers(cfg Config) {
	for _, d := range q.dests {
		for len(d.jobs) > d.active && d.active < cfg.PerDestination && q.active < cfg.Workers {
			d.active++
			q.active++
			q.wg.Add(1)
			go q.work(d, cfg)
		}
	}
}

// takeJob takes the next job for a destination, or nil.
func (q *Queue) takeJob(d *dest) *job {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(d.jobs) == 0 {
		return nil
	}
	j := d.jobs[0]
	d.jobs[0] = nil
	d.jobs = d.jobs[1:]
	return j
}

// nextJob takes the next job for a destination, waiting up to idle for one
// to be queued (so an open session is reused); nil when none came.
func (q *Queue) nextJob(d *dest, idle time.Duration) *job {
	if j := q.takeJob(d); j != nil {
		return j
	}
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for {
		select {
		case <-d.more:
			if j := q.takeJob(d); j != nil {
				return j
			}
		case <-timer.C:
			return q.takeJob(d)
		case <-q.closing:
			return nil
		}
	}
}

// work is one delivery worker: it opens a session to its destination and
// delivers queued jobs over it until none is left.
func (q *Queue) work(d *dest, cfg Config) {
	defer func() {
		q.mu.Lock()
		d.active--
		q.active--
		if d.active == 0 && len(d.jobs) == 0 {
			delete(q.dests, d.key)
		}
		q.mu.Unlock()
		q.wg.Done()
		q.kick()
	}()
	opened := time.Now()
	sess, err := d.key.target.Open(q.ctx, d.key.dest)
	if err != nil {
		// The destination is unreachable now: every job queued for it
		// would meet the same failure.
		q.mu.Lock()
		jobs := d.jobs
		d.jobs = nil
		q.mu.Unlock()
		for _, j := range jobs {
			res := make([]Result, len(j.rcpts))
			for i := range res {
				res[i] = Result{Err: err}
			}
			q.logAttempt(j, res, []zap.Field{zap.String("destination", d.key.dest)}, time.Since(opened))
			q.complete(j, res, cfg)
		}
		return
	}
	defer sess.Close()
	for n := 0; n < cfg.MessagesPerSession && sess.Usable(); n++ {
		j := q.nextJob(d, cfg.IdleTimeout)
		if j == nil {
			return
		}
		started := time.Now()
		q.markDelivering(j.e.id) // claim.go
		res := sess.Deliver(q.ctx, j.e.msg, j.rcpts)
		if len(res) != len(j.rcpts) {
			err := fmt.Errorf("target returned %d results for %d recipients", len(res), len(j.rcpts))
			res = make([]Result, len(j.rcpts))
			for i := range res {
				res[i] = Result{Err: TempFail("internal error", err)}
			}
		}
		if n > 0 && !j.retried && !sess.Usable() && noneDone(res) {
			// A reused session died under us (the server closed it while
			// it was idle): that says nothing about this message. Try it
			// again at once on a new session instead of deferring it.
			j.retried = true
			q.mu.Lock()
			d.jobs = append([]*job{j}, d.jobs...)
			q.mu.Unlock()
			return
		}
		q.logAttempt(j, res, sess.LogFields(), time.Since(started))
		q.complete(j, res, cfg)
	}
}

// noneDone reports whether no recipient got a final answer (all deferred).
func noneDone(res []Result) bool {
	for _, r := range res {
		if r.Err == nil || !IsTemporary(r.Err) {
			return false
		}
	}
	return true
}

// logAttempt writes one line per delivery attempt.
func (q *Queue) logAttempt(j *job, res []Result, session []zap.Field, took time.Duration) {
	var delivered, deferred, failed int
	var reply, remote string
	for _, r := range res {
		switch {
		case r.Err == nil:
			delivered++
			reply = r.Reply
		case IsTemporary(r.Err):
			deferred++
			reply = r.Err.Error()
		default:
			failed++
			reply = r.Err.Error()
		}
		if r.RemoteMTA != "" {
			remote = r.RemoteMTA
		}
	}
	// One allocation for all fields: appending to a literal grows it
	// twice per line.
	fields := append(make([]zap.Field, 0, 8+len(session)),
		zap.String("msg_id", j.e.msg.ID),
		zap.String("rcpt_domain", Domain(j.rcpts[0].Addr)),
		zap.Int("rcpts", len(j.rcpts)),
		zap.Int("delivered", delivered),
		zap.Int("deferred", deferred),
		zap.Int("failed", failed),
		zap.String("reply", reply),
	)
	if remote != "" {
		fields = append(fields, zap.String("remote_mta", remote))
	}
	fields = append(fields, session...)
	if deferred+failed > 0 {
		q.log().Warn("delivery attempt", fields...)
	} else {
		q.log().Info("delivery attempt", fields...)
	}
	q.logRecipients(j, res, session, took)
}

// logRecipients writes one line per recipient of an attempt, as Postfix's
// "status=" lines: who, where, how long, over what TLS, with what result.
// delay is the time since the message arrived; transfer is this attempt's.
func (q *Queue) logRecipients(j *job, res []Result, session []zap.Field, took time.Duration) {
	m := j.e.msg
	delay := time.Since(m.Arrived)
	observe := q.config().OnDelivery
	for i, r := range res {
		rcpt := j.rcpts[i]
		status, dsn, reply := "delivered", "2.0.0", r.Reply
		switch {
		case r.Err != nil && IsTemporary(r.Err):
			status = "deferred"
			reply, dsn = describeError(r.Err)
		case r.Err != nil:
			status = "bounced"
			reply, dsn = describeError(r.Err)
		}
		fields := append(make([]zap.Field, 0, 14+len(session)),
			zap.String("msg_id", m.ID),
			zap.String("message_id", m.MessageID),
			zap.String("from", m.From),
			zap.String("rcpt", rcpt.Addr),
		)
		if rcpt.ORCPT != "" {
			fields = append(fields, zap.String("orcpt", rcpt.ORCPT))
		}
		fields = append(fields,
			zap.String("status", status),
			zap.String("dsn", dsn),
			zap.String("reply", reply),
			zap.String("relay", r.RemoteMTA),
			zap.Duration("delay", delay),
			zap.Duration("queue_delay", max(0, delay-took)),
			zap.Duration("transfer", took),
			zap.Int64("size", m.DataSize()),
		)
		if r.Err != nil {
			fields = append(fields, zap.Error(r.Err)) // the whole chain, for us
		}
		fields = append(fields, session...)
		if observe != nil {
			observe(rcpt.Addr, status, r.Err, session)
		}
		if status == "delivered" {
			q.log().Info("delivery", fields...)
		} else {
			q.log().Warn("delivery", fields...)
		}
	}
}

// complete records the results of a job; the last job of a message's round
// finishes the round.
func (q *Queue) complete(j *job, res []Result, cfg Config) {
	m := j.e.msg
	q.mu.Lock()
	for i, r := range j.rcpts {
		out := res[i]
		r.RemoteMTA = out.RemoteMTA
		if out.Err == nil {
			r.Status = Delivered
			r.LastReply, r.Enhanced, r.Action = out.Reply, "", out.Action
			r.DSNPending = m.From != "" && out.Action != "" && notifyOn(r.Notify, "SUCCESS")
			continue
		}
		r.LastReply, r.Enhanced = describeError(out.Err)
		if !IsTemporary(out.Err) {
			r.Status = Failed
			r.DSNPending = reportsFailure(m, r, cfg)
		}
	}
	j.e.inflight--
	last := j.e.inflight == 0
	q.mu.Unlock()
	if last {
		q.finish(j.e, cfg)
	}
}

// canReport reports whether a failure of m can be reported: to its
// sender, or, for mail from the null sender, to the postmaster (but never
// about a report to the postmaster itself).
func canReport(m *Message, cfg Config) bool {
	return m.From != "" || cfg.Postmaster != "" && !m.DoubleBounce
}

// reportsFailure reports whether the failure of recipient r of m is
// reported: to the sender as its NOTIFY asks, or, for mail from the null
// sender (whose NOTIFY=NEVER is our own), to the postmaster.
func reportsFailure(m *Message, r *Recipient, cfg Config) bool {
	if m.From == "" {
		return canReport(m, cfg)
	}
	return notifyOn(r.Notify, "FAILURE")
}

// notifyOn applies RFC 3461 NOTIFY: without NOTIFY, failures (and delays)
// are reported; NEVER reports nothing; otherwise the listed conditions.
func notifyOn(notify []string, cond string) bool {
	if len(notify) == 0 {
		return cond == "FAILURE" || cond == "DELAY"
	}
	for _, n := range notify {
		if strings.EqualFold(n, cond) {
			return true
		}
	}
	return false
}

// describeError returns the text and enhanced code recorded for a failure.
func describeError(err error) (reply, enhanced string) {
	var de *DeliveryError
	if errors.As(err, &de) {
		return fmt.Sprintf("%d %s %s", de.Code, de.Enhanced, de.Message), de.Enhanced
	}
	return "451 4.3.0 Local delivery problem", "4.3.0"
}

// humanDuration writes d for people: "5 days", "4 hours", "90m".
func humanDuration(d time.Duration) string {
	switch {
	case d >= 24*time.Hour && d%(24*time.Hour) == 0:
		if n := d / (24 * time.Hour); n != 1 {
			return fmt.Sprintf("%d days", n)
		}
		return "1 day"
	case d >= time.Hour && d%time.Hour == 0:
		if n := d / time.Hour; n != 1 {
			return fmt.Sprintf("%d hours", n)
		}
		return "1 hour"
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	return s
}

// expire bounces whatever is still pending of a message past MaxAge.
func (q *Queue) expire(e *entry, cfg Config) {
	m := e.msg
	q.mu.Lock()
	pending := q.dispatchable(m)
	for _, r := range pending {
		r.Status = Failed
		last := r.LastReply
		if last == "" {
			last = "no delivery attempt was made"
		}
		r.LastReply = "Message expired after " + humanDuration(cfg.MaxAge) + "; last error: " + last
		r.Enhanced = "4.4.7"
		r.DSNPending = reportsFailure(m, r, cfg)
	}
	q.mu.Unlock()
	q.log().Warn("message expired", zap.String("msg_id", m.ID), zap.Int("rcpts", len(pending)))
	q.finish(e, cfg)
}

// finish ends a delivery round. DSNs are queued first, so that a crash can
// duplicate but never lose them; then the message is removed when nothing
// is left to do, or saved and rescheduled with backoff.
func (q *Queue) finish(e *entry, cfg Config) {
	// The round's slot, taken off the entry now: once the entry is back on
	// the heap a new round may start (and take a slot) before this one's
	// deferred end runs.
	var slot bool
	defer func() { q.roundEnded(slot) }()
	m := e.msg
	q.mu.Lock()
	slot, e.slot = e.slot, false
	if slot {
		q.keyDone(e)
	}
	var report, delayed []*Recipient
	warn := cfg.DelayWarning > 0 && m.From != "" && time.Since(m.Arrived) >= cfg.DelayWarning
	dropped := 0
	for _, r := range m.Recipients {
		if r.DSNPending {
			report = append(report, r)
		}
		if warn && r.Status == Pending && !r.DelayReported && notifyOn(r.Notify, "DELAY") {
			delayed = append(delayed, r)
		}
		if m.From == "" && r.Status == Failed && !r.DSNPending && !r.DoubleBounceSeen {
			r.DoubleBounceSeen = true
			dropped++
		}
	}
	q.mu.Unlock()
	if dropped > 0 {
		q.log().Warn("a DSN (or another message from the null sender) could not be delivered and is dropped; set a postmaster address to be told",
			zap.String("msg_id", m.ID), zap.Int("rcpts", dropped), zap.Bool("double_bounce", m.DoubleBounce))
	}
	if len(delayed) > 0 {
		if err := q.notifyDelay(m, delayed, cfg); err != nil {
			q.log().Error("queueing delay DSN failed; will retry", zap.String("msg_id", m.ID), zap.Error(err))
		} else {
			q.mu.Lock()
			for _, r := range delayed {
				r.DelayReported = true
			}
			q.mu.Unlock()
		}
	}
	if len(report) > 0 {
		if err := q.notify(m, report, cfg); err != nil {
			q.log().Error("queueing DSN failed; will retry", zap.String("msg_id", m.ID), zap.Error(err))
		} else {
			q.mu.Lock()
			for _, r := range report {
				r.DSNPending = false
			}
			q.mu.Unlock()
		}
	}
	q.mu.Lock()
	m.Attempts++
	e.inflight = 0
	open := len(m.Pending()) > 0
	for _, r := range m.Recipients {
		open = open || r.DSNPending
	}
	if !open {
		q.mu.Unlock()
		if err := q.store.Remove(m.ID); err != nil {
			q.log().Error("removing finished message", zap.String("msg_id", m.ID), zap.Error(err))
		}
		q.mu.Lock()
		delete(q.entries, m.ID)
		q.mu.Unlock()
		return
	}
	next := time.Now().Add(backoff(time.Since(m.retryStart()), cfg))
	m.NextAttempt = next
	q.mu.Unlock()
	err := q.store.Save(m)
	if err != nil {
		q.log().Error("saving message state", zap.String("msg_id", m.ID), zap.Error(err))
	}
	q.mu.Lock()
	e.dirty = err != nil
	q.rest(e) // a deferred message waits with its envelope on disk
	if _, ok := q.entries[m.ID]; ok {
		q.schedule(e, next)
	}
	q.mu.Unlock()
	q.kick()
}

// backoff returns the delay before the next attempt of a message that has
// been queued for age: as long as it has waited so far, between
// RetryInitial and RetryMax, with ±20% jitter (Postfix's model). The waits
// double as the message ages, and depend on its age only: attempts that
// a flush caused do not push the next retry out.
func backoff(age time.Duration, cfg Config) time.Duration {
	d := min(max(age, cfg.RetryInitial), cfg.RetryMax)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * jitter)
}

// dueHeap orders entries by due time.
type dueHeap []*entry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}
