package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/dsntest"

	"go.uber.org/zap/zaptest"

	"github.com/caddy-smtp/caddy-smtp/dsn"
)

// quiet is how long a test watches for a delivery that must not happen.
const quiet = 300 * time.Millisecond

func to(f Target) Router { return RouterFunc(func(*Message, string) Target { return f }) }

func mustSnapshot(t *testing.T, q *Queue, id string) Snapshot {
	t.Helper()
	s, err := q.Snapshot(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tempFailFirst fails each recipient's first attempt with a 451.
func tempFailFirst(_ string, attempt int) Result {
	if attempt == 1 {
		return Result{Err: &DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.1", Message: "try again"}}
	}
	return Result{Reply: "250 ok", Action: "delivered"}
}

func TestHoldStopsDeliveryAcrossRestartAndReleaseDelivers(t *testing.T) {
	dir := t.TempDir()
	store, err := openTestStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	q1, _ := New(store, zaptest.NewLogger(t))
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
	if s := mustSnapshot(t, q1, id); s.State != StateHeld || !s.Held || !s.NextAttempt.IsZero() {
		t.Fatalf("snapshot of a held message: %+v", s)
	}
	if n, err := q1.Flush(id); !errors.Is(err, ErrHeld) || n != 0 {
		t.Fatalf("flush of a held message: %d, %v", n, err)
	}
	if err := q1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The hold is stored with the message.
	q2 := openQueue(t, dir)
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
	if err := q2.Release(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("release of a delivered message: %v", err)
	}
}

func TestHoldWaitsForRunningDelivery(t *testing.T) {
	q := openQueue(t, t.TempDir())
	f := newFake(tempFailFirst)
	f.hold = make(chan struct{})
	q.Attach(to(f), testConfig(), zaptest.NewLogger(t))
	id := enqueue(t, q, "s@sender.test", "a@example.test")
	eventually(t, "delivery started", func() bool { return mustSnapshot(t, q, id).State == StateDelivering })

	// The round does not end before the deadline: nothing changes.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Hold(ctx, id); !errors.Is(err, ErrBusy) {
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
	if s.State != StateHeld || s.Attempts != 1 || s.LastError == "" || !strings.Contains(s.LastError, "451 4.4.1") {
		t.Fatalf("after the round: %+v", s)
	}
	if got := f.delivered("a@example.test"); len(got) != 0 {
		t.Fatalf("held message delivered: %q", got)
	}
}

func TestHoldDomainPersistsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	store, err := openTestStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	q1, _ := New(store, zaptest.NewLogger(t))
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
		if s.State != StateDomainHeld {
			t.Fatalf("%s: state %q, want %q: %+v", id, s.State, StateDomainHeld, s)
		}
		for _, r := range s.Recipients {
			if wantHeld := r.Status == "pending"; r.Held != wantHeld || Domain(r.Addr) == "example.test" && r.Status != "pending" {
				t.Fatalf("%s: recipient %+v", id, r)
			}
		}
	}
	if n, err := q1.Flush(only); !errors.Is(err, ErrHeld) || n != 0 {
		t.Fatalf("flush of a message for a held domain: %d, %v", n, err)
	}
	if err := q1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "held-domains.json"))
	if err != nil || !strings.Contains(string(raw), `"example.test"`) {
		t.Fatalf("held-domains.json: %q, %v", raw, err)
	}

	q2 := openQueue(t, dir)
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

func TestFlushMakesDeferredMessageDue(t *testing.T) {
	q := openQueue(t, t.TempDir())
	f := newFake(tempFailFirst)
	cfg := testConfig()
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour // only a flush retries
	q.Attach(to(f), cfg, zaptest.NewLogger(t))
	first := enqueue(t, q, "s@sender.test", "a@example.test")
	second := enqueue(t, q, "s@sender.test", "b@example.test")
	for _, id := range []string{first, second} {
		eventually(t, "deferral", func() bool { return mustSnapshot(t, q, id).State == StateDeferred })
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
	if _, err := q.Flush(first); !errors.Is(err, ErrNotFound) {
		t.Fatalf("flush of a delivered message: %v", err)
	}
}

func TestDeleteRemovesFiles(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir)
	id := enqueue(t, q, "s@sender.test", "a@example.test")
	keep := enqueue(t, q, "s@sender.test", "b@example.test")
	if n, err := q.Delete(context.Background(), id, false); err != nil || n != 0 {
		t.Fatalf("delete: %d, %v", n, err)
	}
	for _, p := range spoolFiles(t, dir) {
		if strings.Contains(p, id) {
			t.Fatalf("%s still in the spool", p)
		}
	}
	if len(spoolFiles(t, dir)) != 2 || q.Len() != 1 {
		t.Fatalf("other message lost: %v", spoolFiles(t, dir))
	}
	if _, err := q.Delete(context.Background(), id, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	f := newFake(nil)
	q.Attach(to(f), testConfig(), zaptest.NewLogger(t))
	eventually(t, "the other message", func() bool { return q.Len() == 0 })
	if len(f.delivered("a@example.test")) != 0 || len(f.delivered("b@example.test")) != 1 {
		t.Fatalf("deliveries %v (kept %s)", f.got, keep)
	}
}

func TestDeleteWithBounceQueuesDSN(t *testing.T) {
	dir := t.TempDir()
	q := openQueue(t, dir)
	f := newFake(func(rcpt string, _ int) Result {
		if rcpt == "slow@example.test" {
			return Result{Err: &DeliveryError{Temporary: true, Code: 421, Enhanced: "4.4.2", Message: "busy"}}
		}
		return Result{Reply: "250 ok", Action: "delivered"}
	})
	bounces := newFake(nil)
	cfg := testConfig()
	cfg.RetryInitial, cfg.RetryMax = time.Hour, time.Hour
	q.Attach(routeBounces(f, bounces), cfg, zaptest.NewLogger(t))
	id := enqueue(t, q, "s@sender.test", "good@example.test", "slow@example.test")
	eventually(t, "deferral", func() bool { return mustSnapshot(t, q, id).State == StateDeferred })

	n, err := q.Delete(context.Background(), id, true)
	if err != nil || n != 1 {
		t.Fatalf("delete with bounce: %d, %v", n, err)
	}
	eventually(t, "DSN", func() bool { return len(bounces.delivered("s@sender.test")) == 1 && q.Len() == 0 })
	for _, p := range spoolFiles(t, dir) {
		if strings.Contains(p, id) {
			t.Fatalf("%s still in the spool", p)
		}
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

func TestReadHeaderAndBody(t *testing.T) {
	q := openQueue(t, t.TempDir())
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
	if _, err := q.ReadHeader("NOSUCHID"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
	s := mustSnapshot(t, q, id)
	if s.From != "s@sender.test" || len(s.Recipients) != 1 || s.Recipients[0].Status != "pending" ||
		s.State != StateQueued || s.Size == 0 || s.NextAttempt.IsZero() {
		t.Fatalf("snapshot %+v", s)
	}
	if all := q.Snapshots(); len(all) != 1 || all[0].ID != id {
		t.Fatalf("snapshots %+v", all)
	}
}
