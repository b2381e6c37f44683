package queuetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// enqueueHeld commits a held message from s@sender.test to rcpt, as the
// smtp app commits one that a check quarantined when quarantinedAt is not
// zero, else as an administrator's hold.
func enqueueHeld(t *testing.T, q *queue.Queue, rcpt string, arrived, quarantinedAt time.Time) string {
	t.Helper()
	id := queue.NewID()
	w, err := q.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "Subject: held %s\r\n\r\nbody of %s\r\n", id, id)
	m := &queue.Message{From: "s@sender.test", Arrived: arrived, Held: true,
		Recipients: []*queue.Recipient{{Addr: rcpt}}}
	if !quarantinedAt.IsZero() {
		m.Quarantine = &queue.Quarantine{Check: "test", Reason: "test verdict", At: quarantinedAt}
	}
	if err := q.Commit(w, m); err != nil {
		t.Fatal(err)
	}
	return id
}

func gone(q *queue.Queue, s queue.Store, id string) bool {
	_, err := q.Snapshot(id)
	return errors.Is(err, queue.ErrNotFound) && !hasBody(s, id)
}

// testQuarantineRetention: a quarantined message past its retention is
// deleted without a DSN; a younger one does not expire by the maximum age
// while quarantined, and once released it is delivered (its age counts
// from the release), not bounced.
func testQuarantineRetention(t *testing.T, open OpenFunc) {
	q, store := openQueueStore(t, open, t.TempDir())
	f, bounces := newFake(nil), newFake(nil)
	now := time.Now()
	old := enqueueHeld(t, q, "old@example.test", now.Add(-3*time.Hour), now.Add(-2*time.Hour))
	young := enqueueHeld(t, q, "young@example.test", now.Add(-time.Hour), now)
	cfg := testConfig()
	cfg.MaxAge = 30 * time.Minute
	cfg.QuarantineRetention = time.Hour
	deleted := queue.QuarantineDeleted()
	q.Attach(routeBounces(f, bounces), cfg, zaptest.NewLogger(t))

	eventually(t, "the old quarantined message deleted", func() bool { return gone(q, store, old) })
	if queue.QuarantineDeleted() <= deleted {
		t.Error("QuarantineDeleted did not count the deletion")
	}
	if s := mustSnapshot(t, q, young); s.State != queue.StateQuarantine || s.Quarantine == nil || s.Quarantine.Reason != "test verdict" {
		t.Fatalf("young message: %+v", s)
	}
	if l := q.Quarantined(); len(l) != 1 || l[0].ID != young {
		t.Fatalf("Quarantined() = %+v, want only %s", l, young)
	}
	if err := q.Release(young); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the released message delivered", func() bool {
		return len(f.delivered("young@example.test")) == 1 && q.Len() == 0
	})
	if got := bounces.delivered("s@sender.test"); len(got) != 0 {
		t.Fatalf("%d DSN(s) sent to the sender of quarantined messages:\n%s", len(got), got[0])
	}
	if got := f.delivered("old@example.test"); len(got) != 0 {
		t.Fatal("the message deleted at the end of its retention was delivered")
	}
}

// testQuarantineRetentionTimer: with no other event, the scheduler wakes
// at the end of a retention and deletes the message, not before; a message
// held by an administrator is not subject to it.
func testQuarantineRetentionTimer(t *testing.T, open OpenFunc) {
	q, store := openQueueStore(t, open, t.TempDir())
	f := newFake(nil)
	cfg := testConfig()
	cfg.QuarantineRetention = 400 * time.Millisecond
	q.Attach(queue.RouterFunc(func(*queue.Message, string) queue.Target { return f }), cfg, zaptest.NewLogger(t))
	at := time.Now()
	held := enqueueHeld(t, q, "held@example.test", at.Add(-time.Hour), time.Time{})
	id := enqueueHeld(t, q, "q@example.test", at, at)
	eventually(t, "the quarantined message deleted", func() bool { return gone(q, store, id) })
	if d := time.Since(at); d < cfg.QuarantineRetention {
		t.Fatalf("deleted after %v, before its retention of %v", d, cfg.QuarantineRetention)
	}
	if s := mustSnapshot(t, q, held); s.State != queue.StateHeld {
		t.Fatalf("held message: %+v", s)
	}
	if len(f.delivered("q@example.test"))+len(f.delivered("held@example.test")) != 0 {
		t.Fatal("a held message was delivered")
	}
}

// testQuarantineRetentionReload: a configuration with a shorter retention
// applies to the messages already quarantined.
func testQuarantineRetentionReload(t *testing.T, open OpenFunc) {
	q, store := openQueueStore(t, open, t.TempDir())
	f := newFake(nil)
	route := queue.RouterFunc(func(*queue.Message, string) queue.Target { return f })
	cfg := testConfig()
	cfg.QuarantineRetention = time.Hour
	q.Attach(route, cfg, zaptest.NewLogger(t))
	now := time.Now()
	id := enqueueHeld(t, q, "q@example.test", now.Add(-10*time.Minute), now.Add(-10*time.Minute))
	eventually(t, "the quarantined message parked", func() bool {
		s, err := q.Snapshot(id)
		return err == nil && s.State == queue.StateQuarantine && s.NextAttempt.IsZero()
	})
	cfg.QuarantineRetention = 5 * time.Minute
	q.Attach(route, cfg, zaptest.NewLogger(t))
	eventually(t, "the quarantined message deleted after the reload", func() bool { return gone(q, store, id) })
}
