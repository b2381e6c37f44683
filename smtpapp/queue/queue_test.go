package queue

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/dsntest"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/caddy-smtp/caddy-smtp/dsn"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// fakeTarget records deliveries; outcome decides each recipient's result.
type fakeTarget struct {
	outcome func(rcpt string, attempt int) Result
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

func newFake(outcome func(rcpt string, attempt int) Result) *fakeTarget {
	return &fakeTarget{outcome: outcome, attempts: map[string]int{}, got: map[string][]string{}}
}

func (f *fakeTarget) Destination(_ *Message, rcpt string) string { return Domain(rcpt) }

func (f *fakeTarget) Open(context.Context, string) (Session, error) {
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

func (s *fakeSession) Deliver(ctx context.Context, m *Message, rcpts []*Recipient) []Result {
	if s.f.hold != nil {
		<-s.f.hold
	}
	if s.uses++; s.f.dieOnReuse && s.uses == 2 {
		s.broken = true
		out := make([]Result, len(rcpts))
		for i := range out {
			out[i] = Result{Err: &DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.2", Message: "connection lost: EOF"}}
		}
		return out
	}
	b, err := m.OpenBody()
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(b)
	b.Close()
	out := make([]Result, len(rcpts))
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	for i, r := range rcpts {
		s.f.attempts[r.Addr]++
		out[i] = Result{Reply: "250 ok", Action: "delivered"}
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

func testConfig() Config {
	return Config{RetryInitial: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond, Hostname: "mx.test"}
}

func openQueue(t *testing.T, dir string) *Queue {
	t.Helper()
	store, err := openTestStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	q, err := New(store, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(context.Background()) })
	return q
}

// enqueue commits a message with the given sender and recipients.
func enqueue(t *testing.T, q *Queue, from string, rcpts ...string) string {
	t.Helper()
	id := NewID()
	w, err := q.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "Subject: test %s\r\nMessage-ID: <%s@test>\r\n\r\nbody of %s\r\n", id, id, id)
	m := &Message{From: from, Arrived: time.Now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, &Recipient{Addr: r})
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

func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "msg", "*"))
	return files
}

func TestDeliverAndRemove(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir)
	f := newFake(nil)
	q.Attach(RouterFunc(func(*Message, string) Target { return f }), testConfig(), zaptest.NewLogger(t))
	id := enqueue(t, q, "s@sender.test", "a@example.test", "b@example.test")
	eventually(t, "delivery", func() bool { return q.Len() == 0 })
	for _, r := range []string{"a@example.test", "b@example.test"} {
		got := f.delivered(r)
		if len(got) != 1 || !strings.Contains(got[0], "body of "+id) {
			t.Fatalf("%s got %q", r, got)
		}
	}
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Fatalf("spool not empty after delivery: %v", files)
	}
}

func TestTemporaryFailureIsRetried(t *testing.T) {
	q := openQueue(t, t.TempDir())
	f := newFake(func(rcpt string, attempt int) Result {
		if attempt < 3 {
			return Result{Err: &DeliveryError{Temporary: true, Code: 451, Enhanced: "4.3.0", Message: "busy"}}
		}
		return Result{Reply: "250 ok"}
	})
	q.Attach(RouterFunc(func(*Message, string) Target { return f }), testConfig(), zaptest.NewLogger(t))
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
func routeBounces(f, bounces Target) Router {
	return RouterFunc(func(_ *Message, rcpt string) Target {
		if Domain(rcpt) == "sender.test" {
			return bounces
		}
		return f
	})
}

func TestPermanentFailureBouncesPartialResult(t *testing.T) {
	q := openQueue(t, t.TempDir())
	f := newFake(func(rcpt string, _ int) Result {
		if rcpt == "bad@example.test" {
			return Result{Err: &DeliveryError{Code: 550, Enhanced: "5.1.1", Message: "no such user"}, RemoteMTA: "mx.example.test"}
		}
		return Result{Reply: "250 ok"}
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

func TestNoBounceForNullSenderOrNotifyNever(t *testing.T) {
	q := openQueue(t, t.TempDir())
	fail := newFake(func(string, int) Result {
		return Result{Err: &DeliveryError{Code: 550, Enhanced: "5.1.1", Message: "no such user"}}
	})
	bounces := newFake(nil)
	q.Attach(routeBounces(fail, bounces), testConfig(), zaptest.NewLogger(t))
	enqueue(t, q, "", "bad@example.test")
	id := NewID()
	w, _ := q.Create(id)
	io.WriteString(w, "Subject: x\r\n\r\ny\r\n")
	q.Commit(w, &Message{From: "s@sender.test", Arrived: time.Now(),
		Recipients: []*Recipient{{Addr: "bad2@example.test", Notify: []string{"NEVER"}}}})
	eventually(t, "both failed", func() bool { return q.Len() == 0 })
	if got := bounces.delivered("s@sender.test"); len(got) != 0 {
		t.Fatalf("DSN sent although not wanted: %d", len(got))
	}
}

func TestSuccessDSNWhenAsked(t *testing.T) {
	q := openQueue(t, t.TempDir())
	f := newFake(func(string, int) Result { return Result{Reply: "250 ok", Action: "relayed"} })
	bounces := newFake(nil)
	q.Attach(routeBounces(f, bounces), testConfig(), zaptest.NewLogger(t))
	id := NewID()
	w, _ := q.Create(id)
	io.WriteString(w, "Subject: x\r\n\r\ny\r\n")
	q.Commit(w, &Message{From: "s@sender.test", Arrived: time.Now(), EnvID: "env-1",
		Recipients: []*Recipient{{Addr: "a@example.test", Notify: []string{"SUCCESS"}, ORCPT: "rfc822;orig@example.test"}}})
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

func TestExpiryBounces(t *testing.T) {
	q := openQueue(t, t.TempDir())
	f := newFake(func(string, int) Result {
		return Result{Err: &DeliveryError{Temporary: true, Code: 421, Enhanced: "4.4.2", Message: "try later"}}
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

func TestConnectionReuseAndPerDestinationLimit(t *testing.T) {
	q := openQueue(t, t.TempDir())
	f := newFake(nil)
	f.hold = make(chan struct{})
	cfg := testConfig()
	cfg.PerDestination = 3
	q.Attach(RouterFunc(func(*Message, string) Target { return f }), cfg, zaptest.NewLogger(t))
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

func TestRestartPicksUpSpool(t *testing.T) {
	dir := t.TempDir()
	store, err := openTestStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	q1, _ := New(store, zaptest.NewLogger(t))
	var ids []string
	for i := 0; i < 5; i++ {
		ids = append(ids, enqueue(t, q1, "s@sender.test", fmt.Sprintf("r%d@example.test", i)))
	}
	// No router attached: nothing is delivered; stop.
	if err := q1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s, err := openTestStore(dir); err != nil {
		t.Fatalf("spool not released after Close: %v", err)
	} else {
		s.Close()
	}
	q2 := openQueue(t, dir)
	if q2.Len() != 5 {
		t.Fatalf("restarted queue has %d messages, want 5", q2.Len())
	}
	f := newFake(nil)
	q2.Attach(RouterFunc(func(*Message, string) Target { return f }), testConfig(), zaptest.NewLogger(t))
	eventually(t, "delivery after restart", func() bool { return q2.Len() == 0 })
	for i, id := range ids {
		got := f.delivered(fmt.Sprintf("r%d@example.test", i))
		if len(got) != 1 || !strings.Contains(got[0], id) {
			t.Fatalf("message %s: %q", id, got)
		}
	}
}

func TestSpoolLockAndCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s1, err := OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDirStore(dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open of a locked spool: %v", err)
	}
	// A body without envelope (crash between the renames), a leftover in
	// tmp/, and an unreadable envelope.
	os.WriteFile(filepath.Join(dir, "msg", "ORPHAN.eml"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "tmp", "HALF.eml"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "msg", "BROKEN.json"), []byte("{not json"), 0o600)
	os.WriteFile(filepath.Join(dir, "msg", "BROKEN.eml"), []byte("x"), 0o600)
	s1.Close()
	s2, err := OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	msgs, err := s2.Load()
	if err == nil || !strings.Contains(err.Error(), "BROKEN") {
		t.Fatalf("unreadable envelope not reported: %v", err)
	}
	if len(msgs) != 0 {
		t.Fatalf("loaded %d messages", len(msgs))
	}
	for _, p := range []string{"msg/ORPHAN.eml", "tmp/HALF.eml", "msg/BROKEN.json"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("%s still there", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "corrupt", "BROKEN.json")); err != nil {
		t.Errorf("unreadable envelope not kept in corrupt/: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	cfg := Config{RetryInitial: time.Minute, RetryMax: time.Hour}
	for n, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 10: time.Hour, 100: time.Hour} {
		got := backoff(n, cfg)
		if got < want*8/10 || got > want*12/10 {
			t.Errorf("backoff(%d) = %v, want %v ±20%%", n, got, want)
		}
	}
}

func TestDeadReusedSessionRetriesAtOnce(t *testing.T) {
	q := openQueue(t, t.TempDir())
	f := newFake(nil)
	f.dieOnReuse = true
	cfg := testConfig()
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour // only an immediate retry can deliver
	cfg.PerDestination = 1
	q.Attach(RouterFunc(func(*Message, string) Target { return f }), cfg, zaptest.NewLogger(t))
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
