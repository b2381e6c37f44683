package queuetest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// testRequeue: a message three hours old that keeps failing is retried
// after about three hours, also after a flush; a requeue makes it due now
// and restarts the backoff (the next retry in about RetryInitial), keeps
// its arrival time and is stored; once the target is fixed a requeue
// delivers it. A held message and a gone one are refused.
func testRequeue(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	store := Open(t, open, dir)
	const id = "REQUEUEOLD1"
	w, err := store.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: old\r\n\r\nold\r\n"))
	arrived := time.Now().Add(-3 * time.Hour).Round(time.Second)
	if err := w.Commit(&queue.Message{From: "s@sender.test", Arrived: arrived,
		Recipients: []*queue.Recipient{{Addr: "a@example.test"}}}); err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(store, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(context.Background()) })
	var fixed atomic.Bool
	f := newFake(func(string, int) queue.Result {
		if fixed.Load() {
			return queue.Result{Reply: "250 ok", Action: "delivered"}
		}
		return queue.Result{Err: &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.1", Message: "no route"}}
	})
	cfg := testConfig()
	cfg.RetryInitial, cfg.RetryMax = time.Minute, 10*time.Hour
	q.Attach(to(f), cfg, zaptest.NewLogger(t))
	attempts := func(n int) queue.Snapshot {
		t.Helper()
		eventually(t, "a deferral", func() bool {
			s := mustSnapshot(t, q, id)
			return s.Attempts == n && s.State == queue.StateDeferred
		})
		return mustSnapshot(t, q, id)
	}
	if s := attempts(1); time.Until(s.NextAttempt) < 2*time.Hour {
		t.Fatalf("first retry of a 3h old message at %v, want in about 3h", s.NextAttempt)
	}
	if _, err := q.Flush(id); err != nil {
		t.Fatal(err)
	}
	if s := attempts(2); time.Until(s.NextAttempt) < 2*time.Hour {
		t.Fatalf("retry after a flush at %v, want in about 3h still", s.NextAttempt)
	}
	if err := q.Requeue(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	s := attempts(3)
	if d := time.Until(s.NextAttempt); d > 2*time.Minute || s.Requeued.IsZero() || !s.Arrived.Equal(arrived) {
		t.Fatalf("after a requeue: next retry in %v, want about RetryInitial (1m); requeued %v, arrived %v (want %v)",
			d, s.Requeued, s.Arrived, arrived)
	}
	if m := Load(t, store)[id]; m == nil || m.Requeued.IsZero() {
		t.Fatalf("requeue not stored: %+v", m)
	}

	held := enqueue(t, q, "s@sender.test", "b@example.test")
	if err := q.Hold(context.Background(), held); err != nil {
		t.Fatal(err)
	}
	if err := q.Requeue(context.Background(), held); !errors.Is(err, queue.ErrHeld) {
		t.Fatalf("requeue of a held message: %v", err)
	}
	fixed.Store(true)
	if err := q.Requeue(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the requeued message delivered", func() bool { return len(f.delivered("a@example.test")) == 1 })
	eventually(t, "the message removed", func() bool { return q.Len() == 1 })
	if err := q.Requeue(context.Background(), id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("requeue of a delivered message: %v", err)
	}
}
