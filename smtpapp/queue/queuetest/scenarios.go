package queuetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/dsn"
	"github.com/caddy-smtp/caddy-smtp/internal/dsntest"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// fakeTarget records deliveries; outcome decides each recipient's result.
type fakeTarget struct {
	outcome func(rcpt string, attempt int) queue.Result
	hold    chan struct{} // when set, Deliver waits on it
	// dieOnReuse makes a session's second delivery fail as a connection
	// that the server closed while idle.
	dieOnReuse bool

	mu        sync.Mutex
	opens     int
	active    int
	maxActive int
	attempts  map[string]int
	got       map[string][]string // rcpt -> bodies delivered
}

func newFake(outcome func(rcpt string, attempt int) queue.Result) *fakeTarget {
	return &fakeTarget{outcome: outcome, attempts: map[string]int{}, got: map[string][]string{}}
}

func (f *fakeTarget) Destination(_ *queue.Message, rcpt string) string { return queue.Domain(rcpt) }

func (f *fakeTarget) Open(context.Context, string) (queue.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens++
	f.active++
	f.maxActive = max(f.maxActive, f.active)
	return &fakeSession{f: f}, nil
}

type fakeSession struct {
	f      *fakeTarget
	uses   int
	broken bool
}

func (s *fakeSession) Usable() bool           { return !s.broken }
func (s *fakeSession) LogFields() []zap.Field { return nil }
func (s *fakeSession) Close() error {
	s.f.mu.Lock()
	s.f.active--
	s.f.mu.Unlock()
	return nil
}

func (s *fakeSession) Deliver(ctx context.Context, m *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	if s.f.hold != nil {
		<-s.f.hold
	}
	if s.uses++; s.f.dieOnReuse && s.uses == 2 {
		s.broken = true
		out := make([]queue.Result, len(rcpts))
		for i := range out {
			out[i] = queue.Result{Err: &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.2", Message: "connection lost: EOF"}}
		}
		return out
	}
	b, err := m.OpenBody()
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(b)
	b.Close()
	out := make([]queue.Result, len(rcpts))
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	for i, r := range rcpts {
		s.f.attempts[r.Addr]++
		out[i] = queue.Result{Reply: "250 ok", Action: "delivered"}
		if s.f.outcome != nil {
			out[i] = s.f.outcome(r.Addr, s.f.attempts[r.Addr])
		}
		if out[i].Err == nil {
			s.f.got[r.Addr] = append(s.f.got[r.Addr], string(body))
		}
	}
	return out
}

func (f *fakeTarget) delivered(rcpt string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got[rcpt]...)
}

func testConfig() queue.Config {
	return queue.Config{RetryInitial: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond, Hostname: "mx.test"}
}

func openQueue(t *testing.T, open OpenFunc, dir string) *queue.Queue {
	t.Helper()
	q, _ := openQueueStore(t, open, dir)
	return q
}

// openQueueStore opens the store at dir and a queue on it, closed when the
// test ends.
func openQueueStore(t *testing.T, open OpenFunc, dir string) (*queue.Queue, queue.Store) {
	t.Helper()
	store, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(store, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(context.Background()) })
	return q, store
}

// enqueue commits a message with the given sender and recipients.
func enqueue(t *testing.T, q *queue.Queue, from string, rcpts ...string) string {
	t.Helper()
	id := queue.NewID()
	w, err := q.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "Subject: test %s\r\nMessage-ID: <%s@test>\r\n\r\nbody of %s\r\n", id, id, id)
	m := &queue.Message{From: from, Arrived: time.Now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, &queue.Recipient{Addr: r})
	}
	if err := q.Commit(w, m); err != nil {
		t.Fatal(err)
	}
	return id
}

// eventually polls cond until it holds, failing the test after 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, what, cond)
}

// hasBody reports whether the store still opens the body of message id.
func hasBody(s queue.Store, id string) bool {
	r, err := s.OpenBody(id)
	if err == nil {
		r.Close()
	}
	return err == nil
}

// leftInStore closes q, reopens the store at dir and returns what it still
// holds: the messages it loads, and which of ids still have a body.
func leftInStore(t *testing.T, q *queue.Queue, open OpenFunc, dir string, ids ...string) []string {
	t.Helper()
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var left []string
	for _, id := range ids {
		if hasBody(s, id) {
			left = append(left, id+" (body)")
		}
	}
	msgs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		left = append(left, m.ID)
	}
	return left
}

func testDeliverAndRemove(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	q := openQueue(t, open, dir)
	f := newFake(nil)
	q.Attach(queue.RouterFunc(func(*queue.Message, string) queue.Target { return f }), testConfig(), zaptest.NewLogger(t))
	id := enqueue(t, q, "s@sender.test", "a@example.test", "b@example.test")
	eventually(t, "delivery", func() bool { return q.Len() == 0 })
	for _, r := range []string{"a@example.test", "b@example.test"} {
		got := f.delivered(r)
		if len(got) != 1 || !strings.Contains(got[0], "body of "+id) {
			t.Fatalf("%s got %q", r, got)
		}
	}
	if left := leftInStore(t, q, open, dir, id); len(left) != 0 {
		t.Fatalf("spool not empty after delivery: %v", left)
	}
}

func testTemporaryFailureIsRetried(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	f := newFake(func(rcpt string, attempt int) queue.Result {
		if attempt < 3 {
			return queue.Result{Err: &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.3.0", Message: "busy"}}
		}
		return queue.Result{Reply: "250 ok"}
	})
	q.Attach(queue.RouterFunc(func(*queue.Message, string) queue.Target { return f }), testConfig(), zaptest.NewLogger(t))
	enqueue(t, q, "s@sender.test", "a@example.test")
	eventually(t, "delivery after retries", func() bool { return q.Len() == 0 })
	if n := len(f.delivered("a@example.test")); n != 1 {
		t.Fatalf("delivered %d times", n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.attempts["a@example.test"] != 3 {
		t.Fatalf("%d attempts, want 3", f.attempts["a@example.test"])
	}
}

// routeBounces sends recipients at sender.test to bounces and the rest to f.
func routeBounces(f, bounces queue.Target) queue.Router {
	return queue.RouterFunc(func(_ *queue.Message, rcpt string) queue.Target {
		if queue.Domain(rcpt) == "sender.test" {
			return bounces
		}
		return f
	})
}

func testPermanentFailureBouncesPartialResult(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	f := newFake(func(rcpt string, _ int) queue.Result {
		if rcpt == "bad@example.test" {
			return queue.Result{Err: &queue.DeliveryError{Code: 550, Enhanced: "5.1.1", Message: "no such user"}, RemoteMTA: "mx.example.test"}
		}
		return queue.Result{Reply: "250 ok"}
	})
	bounces := newFake(nil)
	q.Attach(routeBounces(f, bounces), testConfig(), zaptest.NewLogger(t))
	id := enqueue(t, q, "s@sender.test", "good@example.test", "bad@example.test")
	eventually(t, "DSN", func() bool { return len(bounces.delivered("s@sender.test")) == 1 && q.Len() == 0 })
	if n := len(f.delivered("good@example.test")); n != 1 {
		t.Fatalf("good recipient delivered %d times", n)
	}
	p, err := dsntest.Parse(strings.NewReader(bounces.delivered("s@sender.test")[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Report.Recipients) != 1 {
		t.Fatalf("DSN reports %d recipients, want 1: %+v", len(p.Report.Recipients), p.Report.Recipients)
	}
	r := p.Report.Recipients[0]
	if r.Action != dsn.Failed || r.Status != "5.1.1" || !strings.Contains(r.Final, "bad@example.test") ||
		!strings.Contains(r.Diagnostic, "550 5.1.1 no such user") || !strings.Contains(r.RemoteMTA, "mx.example.test") {
		t.Fatalf("DSN recipient %+v", r)
	}
	if p.Report.ReportingMTA == "" || !strings.Contains(p.Report.ReportingMTA, "mx.test") {
		t.Errorf("Reporting-MTA %q", p.Report.ReportingMTA)
	}
	if !strings.Contains(string(p.Original), "Message-ID: <"+id+"@test>") {
		t.Errorf("DSN does not return the original headers: %q", p.Original)
	}
}

func testNoBounceForNullSenderOrNotifyNever(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	fail := newFake(func(string, int) queue.Result {
		return queue.Result{Err: &queue.DeliveryError{Code: 550, Enhanced: "5.1.1", Message: "no such user"}}
	})
	bounces := newFake(nil)
	q.Attach(routeBounces(fail, bounces), testConfig(), zaptest.NewLogger(t))
	enqueue(t, q, "", "bad@example.test")
	id := queue.NewID()
	w, _ := q.Create(id)
	io.WriteString(w, "Subject: x\r\n\r\ny\r\n")
	q.Commit(w, &queue.Message{From: "s@sender.test", Arrived: time.Now(),
		Recipients: []*queue.Recipient{{Addr: "bad2@example.test", Notify: []string{"NEVER"}}}})
	eventually(t, "both failed", func() bool { return q.Len() == 0 })
	if got := bounces.delivered("s@sender.test"); len(got) != 0 {
		t.Fatalf("DSN sent although not wanted: %d", len(got))
	}
}

func testSuccessDSNWhenAsked(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	f := newFake(func(string, int) queue.Result { return queue.Result{Reply: "250 ok", Action: "relayed"} })
	bounces := newFake(nil)
	q.Attach(routeBounces(f, bounces), testConfig(), zaptest.NewLogger(t))
	id := queue.NewID()
	w, _ := q.Create(id)
	io.WriteString(w, "Subject: x\r\n\r\ny\r\n")
	q.Commit(w, &queue.Message{From: "s@sender.test", Arrived: time.Now(), EnvID: "env-1",
		Recipients: []*queue.Recipient{{Addr: "a@example.test", Notify: []string{"SUCCESS"}, ORCPT: "rfc822;orig@example.test"}}})
	eventually(t, "success DSN", func() bool { return len(bounces.delivered("s@sender.test")) == 1 })
	p, err := dsntest.Parse(strings.NewReader(bounces.delivered("s@sender.test")[0]))
	if err != nil {
		t.Fatal(err)
	}
	if p.Report.EnvelopeID != "env-1" || len(p.Report.Recipients) != 1 || p.Report.Recipients[0].Action != dsn.Relayed ||
		!strings.Contains(p.Report.Recipients[0].Original, "orig@example.test") {
		t.Fatalf("DSN %+v", p)
	}
}

func testExpiryBounces(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	f := newFake(func(string, int) queue.Result {
		return queue.Result{Err: &queue.DeliveryError{Temporary: true, Code: 421, Enhanced: "4.4.2", Message: "try later"}}
	})
	bounces := newFake(nil)
	cfg := testConfig()
	cfg.MaxAge = 500 * time.Millisecond
	q.Attach(routeBounces(f, bounces), cfg, zaptest.NewLogger(t))
	enqueue(t, q, "s@sender.test", "slow@example.test")
	eventually(t, "expiry DSN", func() bool { return len(bounces.delivered("s@sender.test")) == 1 && q.Len() == 0 })
	p, err := dsntest.Parse(strings.NewReader(bounces.delivered("s@sender.test")[0]))
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Report.Recipients[0]; r.Status != "5.4.7" || !strings.Contains(r.Diagnostic, "421 4.4.2 try later") {
		t.Fatalf("expiry DSN recipient %+v", r)
	}
}

func testConnectionReuseAndPerDestinationLimit(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	f := newFake(nil)
	f.hold = make(chan struct{})
	cfg := testConfig()
	cfg.PerDestination = 3
	q.Attach(queue.RouterFunc(func(*queue.Message, string) queue.Target { return f }), cfg, zaptest.NewLogger(t))
	const n = 60
	for i := 0; i < n; i++ {
		enqueue(t, q, "s@sender.test", fmt.Sprintf("r%d@example.test", i))
	}
	close(f.hold)
	eventually(t, "all delivered", func() bool { return q.Len() == 0 })
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxActive > 3 {
		t.Errorf("%d sessions open at once to one destination, limit 3", f.maxActive)
	}
	if f.opens > n/5 {
		t.Errorf("%d sessions opened for %d messages: connections are not reused", f.opens, n)
	}
}

func testRestartPicksUpSpool(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	store, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	q1, _ := queue.New(store, zaptest.NewLogger(t))
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, enqueue(t, q1, "s@sender.test", fmt.Sprintf("r%d@example.test", i)))
	}
	// No router attached: nothing is delivered; stop.
	if err := q1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s, err := open(dir); err != nil {
		t.Fatalf("spool not released after Close: %v", err)
	} else {
		s.Close()
	}
	q2 := openQueue(t, open, dir)
	if q2.Len() != 5 {
		t.Fatalf("restarted queue has %d messages, want 5", q2.Len())
	}
	f := newFake(nil)
	q2.Attach(queue.RouterFunc(func(*queue.Message, string) queue.Target { return f }), testConfig(), zaptest.NewLogger(t))
	eventually(t, "delivery after restart", func() bool { return q2.Len() == 0 })
	for i, id := range ids {
		got := f.delivered(fmt.Sprintf("r%d@example.test", i))
		if len(got) != 1 || !strings.Contains(got[0], id) {
			t.Fatalf("message %s: %q", id, got)
		}
	}
}

func testDeadReusedSessionRetriesAtOnce(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	f := newFake(nil)
	f.dieOnReuse = true
	cfg := testConfig()
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour // only an immediate retry can deliver
	cfg.PerDestination = 1
	q.Attach(queue.RouterFunc(func(*queue.Message, string) queue.Target { return f }), cfg, zaptest.NewLogger(t))
	enqueue(t, q, "s@sender.test", "a@example.test")
	eventually(t, "first delivery", func() bool { return len(f.delivered("a@example.test")) == 1 })
	// The second message goes over the idle session, which is dead.
	enqueue(t, q, "s@sender.test", "b@example.test")
	eventually(t, "second delivery on a new session", func() bool { return len(f.delivered("b@example.test")) == 1 })
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.opens != 2 {
		t.Fatalf("%d sessions opened, want 2", f.opens)
	}
}

// quiet is how long a test watches for a delivery that must not happen.
const quiet = 300 * time.Millisecond

func to(f queue.Target) queue.Router {
	return queue.RouterFunc(func(*queue.Message, string) queue.Target { return f })
}

func mustSnapshot(t *testing.T, q *queue.Queue, id string) queue.Snapshot {
	t.Helper()
	s, err := q.Snapshot(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tempFailFirst fails each recipient's first attempt with a 451.
func tempFailFirst(_ string, attempt int) queue.Result {
	if attempt == 1 {
		return queue.Result{Err: &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.1", Message: "try again"}}
	}
	return queue.Result{Reply: "250 ok", Action: "delivered"}
}

func testHoldStopsDeliveryAcrossRestartAndReleaseDelivers(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	store, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	q1, _ := queue.New(store, zaptest.NewLogger(t))
	id := enqueue(t, q1, "s@sender.test", "a@example.test")
	if err := q1.Hold(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	f := newFake(nil)
	q1.Attach(to(f), testConfig(), zaptest.NewLogger(t))
	time.Sleep(quiet)
	if got := f.delivered("a@example.test"); len(got) != 0 {
		t.Fatalf("held message delivered: %q", got)
	}
	if s := mustSnapshot(t, q1, id); s.State != queue.StateHeld || !s.Held || !s.NextAttempt.IsZero() {
		t.Fatalf("snapshot of a held message: %+v", s)
	}
	if n, err := q1.Flush(id); !errors.Is(err, queue.ErrHeld) || n != 0 {
		t.Fatalf("flush of a held message: %d, %v", n, err)
	}
	if err := q1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The hold is stored with the message.
	q2 := openQueue(t, open, dir)
	q2.Attach(to(f), testConfig(), zaptest.NewLogger(t))
	time.Sleep(quiet)
	if got := f.delivered("a@example.test"); len(got) != 0 {
		t.Fatalf("held message delivered after a restart: %q", got)
	}
	if s := mustSnapshot(t, q2, id); !s.Held {
		t.Fatalf("hold lost in a restart: %+v", s)
	}
	if err := q2.Release(id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivery after release", func() bool { return q2.Len() == 0 })
	if got := f.delivered("a@example.test"); len(got) != 1 || !strings.Contains(got[0], id) {
		t.Fatalf("delivered %q", got)
	}
	if err := q2.Release(id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("release of a delivered message: %v", err)
	}
}

func testHoldWaitsForRunningDelivery(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	f := newFake(tempFailFirst)
	f.hold = make(chan struct{})
	q.Attach(to(f), testConfig(), zaptest.NewLogger(t))
	id := enqueue(t, q, "s@sender.test", "a@example.test")
	eventually(t, "delivery started", func() bool { return mustSnapshot(t, q, id).State == queue.StateDelivering })

	// The round does not end before the deadline: nothing changes.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Hold(ctx, id); !errors.Is(err, queue.ErrBusy) {
		t.Fatalf("hold during a round that does not end: %v", err)
	}
	if s := mustSnapshot(t, q, id); s.Held {
		t.Fatalf("held although Hold failed: %+v", s)
	}

	held := make(chan error, 1)
	go func() { held <- q.Hold(context.Background(), id) }()
	select {
	case err := <-held:
		t.Fatalf("Hold returned during the round: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(f.hold) // the round ends with a temporary failure
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	time.Sleep(quiet) // well past the retry delay
	s := mustSnapshot(t, q, id)
	if s.State != queue.StateHeld || s.Attempts != 1 || s.LastError == "" || !strings.Contains(s.LastError, "451 4.4.1") {
		t.Fatalf("after the round: %+v", s)
	}
	if got := f.delivered("a@example.test"); len(got) != 0 {
		t.Fatalf("held message delivered: %q", got)
	}
}

func testHoldDomainPersistsAcrossRestart(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	store, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	q1, _ := queue.New(store, zaptest.NewLogger(t))
	if err := q1.HoldDomain("@Example.TEST."); err != nil {
		t.Fatal(err)
	}
	if err := q1.HoldDomain("bad/domain"); err == nil {
		t.Fatal("invalid domain accepted")
	}
	f := newFake(nil)
	q1.Attach(to(f), testConfig(), zaptest.NewLogger(t))
	both := enqueue(t, q1, "s@sender.test", "a@example.test", "b@other.test")
	only := enqueue(t, q1, "s@sender.test", "c@example.test")
	eventually(t, "the other domain", func() bool { return len(f.delivered("b@other.test")) == 1 })
	time.Sleep(quiet)
	if got := append(f.delivered("a@example.test"), f.delivered("c@example.test")...); len(got) != 0 {
		t.Fatalf("held domain got mail: %q", got)
	}
	for _, id := range []string{both, only} {
		s := mustSnapshot(t, q1, id)
		if s.State != queue.StateDomainHeld {
			t.Fatalf("%s: state %q, want %q: %+v", id, s.State, queue.StateDomainHeld, s)
		}
		for _, r := range s.Recipients {
			if wantHeld := r.Status == "pending"; r.Held != wantHeld || queue.Domain(r.Addr) == "example.test" && r.Status != "pending" {
				t.Fatalf("%s: recipient %+v", id, r)
			}
		}
	}
	if n, err := q1.Flush(only); !errors.Is(err, queue.ErrHeld) || n != 0 {
		t.Fatalf("flush of a message for a held domain: %d, %v", n, err)
	}
	if err := q1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	q2 := openQueue(t, open, dir)
	if got := q2.HeldDomains(); !reflect.DeepEqual(got, []string{"example.test"}) {
		t.Fatalf("held domains after a restart: %q", got)
	}
	q2.Attach(to(f), testConfig(), zaptest.NewLogger(t))
	time.Sleep(quiet)
	if got := append(f.delivered("a@example.test"), f.delivered("c@example.test")...); len(got) != 0 {
		t.Fatalf("held domain got mail after a restart: %q", got)
	}
	if err := q2.ReleaseDomain("example.test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivery after the release", func() bool { return q2.Len() == 0 })
	if len(f.delivered("a@example.test")) != 1 || len(f.delivered("c@example.test")) != 1 || len(f.delivered("b@other.test")) != 1 {
		t.Fatalf("deliveries: %v", f.got)
	}
	if got := q2.HeldDomains(); len(got) != 0 {
		t.Fatalf("held domains after release: %q", got)
	}
	if err := q2.ReleaseDomain("example.test"); err != nil {
		t.Fatalf("releasing a domain that is not held: %v", err)
	}
}

func testFlushMakesDeferredMessageDue(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	f := newFake(tempFailFirst)
	cfg := testConfig()
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour // only a flush retries
	q.Attach(to(f), cfg, zaptest.NewLogger(t))
	first := enqueue(t, q, "s@sender.test", "a@example.test")
	second := enqueue(t, q, "s@sender.test", "b@example.test")
	for _, id := range []string{first, second} {
		eventually(t, "deferral", func() bool { return mustSnapshot(t, q, id).State == queue.StateDeferred })
		s := mustSnapshot(t, q, id)
		if s.Attempts != 1 || time.Until(s.NextAttempt) < 30*time.Minute || !strings.Contains(s.LastError, "451") {
			t.Fatalf("deferred message: %+v", s)
		}
	}
	if n, err := q.Flush(first); err != nil || n != 1 {
		t.Fatalf("flush %s: %d, %v", first, n, err)
	}
	eventually(t, "flushed message delivered", func() bool { return len(f.delivered("a@example.test")) == 1 })
	time.Sleep(quiet)
	if len(f.delivered("b@example.test")) != 0 {
		t.Fatal("flushing one message delivered another")
	}
	if n, err := q.Flush(""); err != nil || n != 1 {
		t.Fatalf("flush all: %d, %v", n, err)
	}
	eventually(t, "all delivered", func() bool { return q.Len() == 0 })
	if _, err := q.Flush(first); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("flush of a delivered message: %v", err)
	}
}

func testDeleteRemovesFromStore(t *testing.T, open OpenFunc) {
	q, store := openQueueStore(t, open, t.TempDir())
	id := enqueue(t, q, "s@sender.test", "a@example.test")
	keep := enqueue(t, q, "s@sender.test", "b@example.test")
	if n, err := q.Delete(context.Background(), id, false); err != nil || n != 0 {
		t.Fatalf("delete: %d, %v", n, err)
	}
	if hasBody(store, id) {
		t.Fatalf("%s still in the spool", id)
	}
	if !hasBody(store, keep) || q.Len() != 1 {
		t.Fatalf("other message lost: %d queued", q.Len())
	}
	if _, err := q.Delete(context.Background(), id, false); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	f := newFake(nil)
	q.Attach(to(f), testConfig(), zaptest.NewLogger(t))
	eventually(t, "the other message", func() bool { return q.Len() == 0 })
	if len(f.delivered("a@example.test")) != 0 || len(f.delivered("b@example.test")) != 1 {
		t.Fatalf("deliveries %v (kept %s)", f.got, keep)
	}
}

func testDeleteWithBounceQueuesDSN(t *testing.T, open OpenFunc) {
	q, store := openQueueStore(t, open, t.TempDir())
	f := newFake(func(rcpt string, _ int) queue.Result {
		if rcpt == "slow@example.test" {
			return queue.Result{Err: &queue.DeliveryError{Temporary: true, Code: 421, Enhanced: "4.4.2", Message: "busy"}}
		}
		return queue.Result{Reply: "250 ok", Action: "delivered"}
	})
	bounces := newFake(nil)
	cfg := testConfig()
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	q.Attach(routeBounces(f, bounces), cfg, zaptest.NewLogger(t))
	id := enqueue(t, q, "s@sender.test", "good@example.test", "slow@example.test")
	eventually(t, "deferral", func() bool { return mustSnapshot(t, q, id).State == queue.StateDeferred })

	n, err := q.Delete(context.Background(), id, true)
	if err != nil || n != 1 {
		t.Fatalf("delete with bounce: %d, %v", n, err)
	}
	eventually(t, "DSN", func() bool { return len(bounces.delivered("s@sender.test")) == 1 && q.Len() == 0 })
	if hasBody(store, id) {
		t.Fatalf("%s still in the spool", id)
	}
	p, err := dsntest.Parse(strings.NewReader(bounces.delivered("s@sender.test")[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Report.Recipients) != 1 {
		t.Fatalf("DSN reports %d recipients, want only the pending one: %+v", len(p.Report.Recipients), p.Report.Recipients)
	}
	r := p.Report.Recipients[0]
	if r.Action != dsn.Failed || r.Status != "5.0.0" || !strings.Contains(r.Final, "slow@example.test") ||
		!strings.Contains(r.Diagnostic, "deleted by the administrator") {
		t.Fatalf("DSN recipient %+v", r)
	}
	if !strings.Contains(string(p.Original), "Message-ID: <"+id+"@test>") {
		t.Errorf("DSN does not return the original: %q", p.Original)
	}
}

func testReadHeaderAndBody(t *testing.T, open OpenFunc) {
	q := openQueue(t, open, t.TempDir())
	id := enqueue(t, q, "s@sender.test", "a@example.test")
	h, err := q.ReadHeader(id)
	if err != nil {
		t.Fatal(err)
	}
	want := "Subject: test " + id + "\r\nMessage-ID: <" + id + "@test>\r\n"
	if string(h) != want {
		t.Fatalf("header %q, want %q", h, want)
	}
	b, err := q.ReadBody(id)
	if err != nil || string(b) != "body of "+id+"\r\n" {
		t.Fatalf("body %q, %v", b, err)
	}
	if _, err := q.ReadHeader("NOSUCHID"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	s := mustSnapshot(t, q, id)
	if s.From != "s@sender.test" || len(s.Recipients) != 1 || s.Recipients[0].Status != "pending" ||
		s.State != queue.StateQueued || s.Size == 0 || s.NextAttempt.IsZero() {
		t.Fatalf("snapshot %+v", s)
	}
	if all := q.Snapshots(); len(all) != 1 || all[0].ID != id {
		t.Fatalf("snapshots %+v", all)
	}
}
