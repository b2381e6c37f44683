package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

// TestQueueIndexed runs the queue scenarios on a store that implements
// queue.IndexStore, so that messages at rest are not kept decoded.
func TestQueueIndexed(t *testing.T) { queuetest.RunQueueTests(t, openMemIndexed) }

// memIndexStore is memStore with queue.IndexStore; it counts the
// envelopes read back.
type memIndexStore struct {
	*memStore
	reads atomic.Int64
}

func openMemIndexed(dir string) (queue.Store, error) {
	s, err := openMem(dir)
	if err != nil {
		return nil, err
	}
	return &memIndexStore{memStore: s.(*memStore)}, nil
}

func (s *memIndexStore) LoadIndex(fn func(queue.Index)) error {
	s.sp.mu.Lock()
	defer s.sp.mu.Unlock()
	for _, env := range s.sp.envs {
		x, err := queue.ParseIndex(env)
		if err != nil {
			return err
		}
		fn(x)
	}
	return nil
}

func (s *memIndexStore) LoadMessage(id string) (*queue.Message, error) {
	s.reads.Add(1)
	s.sp.mu.Lock()
	env, ok := s.sp.envs[id]
	s.sp.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("message %s: %w", id, os.ErrNotExist)
	}
	m := new(queue.Message)
	return m, json.Unmarshal(env, m)
}

var _ queue.IndexStore = (*memIndexStore)(nil)

// switchTarget defers every recipient until accept is set, and records
// how many messages the queue held decoded at each delivery.
type switchTarget struct {
	q          *queue.Queue
	accept     atomic.Bool
	mu         sync.Mutex
	attempts   int
	delivered  int
	maxDecoded int
}

func (t *switchTarget) Destination(*queue.Message, string) string { return "" }

func (t *switchTarget) Open(context.Context, string) (queue.Session, error) { return t, nil }

func (t *switchTarget) Deliver(_ context.Context, _ *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	decoded := t.q.Decoded()
	res := make([]queue.Result, len(rcpts))
	t.mu.Lock()
	defer t.mu.Unlock()
	t.attempts++
	t.maxDecoded = max(t.maxDecoded, decoded)
	for i := range res {
		if t.accept.Load() {
			res[i] = queue.Result{Reply: "250 ok", Action: "relayed"}
			t.delivered++
		} else {
			res[i] = queue.Result{Err: &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.1", Message: "try later"}}
		}
	}
	return res
}

func (t *switchTarget) count() (attempts, delivered, maxDecoded int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.attempts, t.delivered, t.maxDecoded
}

func (t *switchTarget) LogFields() []zap.Field { return nil }
func (t *switchTarget) Usable() bool           { return true }
func (t *switchTarget) Close() error           { return nil }

func commitN(t *testing.T, q *queue.Queue, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := queue.NewID()
		w, err := q.Create(id)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "Subject: %d\r\n\r\nbody\r\n", i)
		m := &queue.Message{From: "a@sender.test", Arrived: time.Now(),
			Recipients: []*queue.Recipient{{Addr: fmt.Sprintf("u%d@example.test", i)}}}
		if err := q.Commit(w, m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func openIndexedQueue(t *testing.T, dir string) (*queue.Queue, *memIndexStore, *switchTarget) {
	t.Helper()
	st, err := openMemIndexed(dir)
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(st, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	tg := &switchTarget{q: q}
	cfg := queue.Config{RetryInitial: time.Hour, RetryMax: time.Hour, Hostname: "mx.test"}
	q.Attach(queue.RouterFunc(func(*queue.Message, string) queue.Target { return tg }), cfg, zaptest.NewLogger(t))
	return q, st.(*memIndexStore), tg
}

// TestDeferredMessagesRest: with an IndexStore, a deferred message is not
// kept decoded once its attempt is saved; listing, holding, releasing
// and reading it load it for the operation only, and a restart decodes
// no envelope at all.
func TestDeferredMessagesRest(t *testing.T) {
	dir := t.TempDir()
	q, st, tg := openIndexedQueue(t, dir)
	ids := commitN(t, q, 20)
	testutil.Eventually(t, 10*time.Second, "every message deferred and at rest", func() bool {
		attempts, _, _ := tg.count()
		return attempts == 20 && q.Decoded() == 0
	})
	for _, s := range q.Snapshots() {
		if s.State != queue.StateDeferred || s.Attempts != 1 || s.NextAttempt.IsZero() || s.Recipients[0].LastReply == "" {
			t.Fatalf("snapshot of a message at rest: %+v", s)
		}
	}
	if h, err := q.ReadHeader(ids[0]); err != nil || string(h) != "Subject: 0\r\n" {
		t.Fatalf("header of a message at rest: %q, %v", h, err)
	}
	if err := q.Hold(context.Background(), ids[1]); err != nil {
		t.Fatal(err)
	}
	if s, _ := q.Snapshot(ids[1]); s.State != queue.StateHeld || q.Decoded() != 0 {
		t.Fatalf("held: %s, %d decoded", s.State, q.Decoded())
	}
	if err := q.Release(ids[1]); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the released message attempted and at rest", func() bool {
		attempts, _, _ := tg.count()
		return attempts == 21 && q.Decoded() == 0
	})
	if n, oldest := q.Stats(); n != 20 || oldest.IsZero() {
		t.Fatalf("stats: %d, %v", n, oldest)
	}
	q.Close(context.Background())

	q, st, _ = openIndexedQueue(t, dir)
	defer q.Close(context.Background())
	if n, reads, decoded := q.Len(), st.reads.Load(), q.Decoded(); n != 20 || reads != 0 || decoded != 0 {
		t.Fatalf("after a restart: %d messages, %d envelopes read, %d decoded", n, reads, decoded)
	}
	if s, _ := q.Snapshot(ids[1]); s.State != queue.StateDeferred || s.Attempts != 2 {
		t.Fatalf("after a restart: %+v", s)
	}
}

// TestFlushBoundsDecoded: a flush of many deferred messages starts their
// rounds a few at a time (maxRounds), so that only those are decoded,
// and still delivers every one.
func TestFlushBoundsDecoded(t *testing.T) {
	q, _, tg := openIndexedQueue(t, t.TempDir())
	defer q.Close(context.Background())
	q.SetMaxRounds(3)
	commitN(t, q, 40)
	testutil.Eventually(t, 10*time.Second, "every message deferred and at rest", func() bool {
		attempts, _, _ := tg.count()
		return attempts == 40 && q.Decoded() == 0
	})
	tg.mu.Lock()
	tg.maxDecoded = 0 // fresh commits are decoded until their first attempt
	tg.mu.Unlock()
	tg.accept.Store(true)
	if _, err := q.Flush(""); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the queue drained", func() bool { return q.Len() == 0 })
	if _, delivered, most := tg.count(); delivered != 40 || most > 3 {
		t.Fatalf("%d delivered; up to %d messages decoded at once (at most 3 rounds)", delivered, most)
	}
}

// TestDeleteUnreadableMessage: a message whose envelope can no longer be
// read can still be deleted without a bounce (which needs only its id);
// a delete with a bounce, which needs its recipients, fails and keeps it.
func TestDeleteUnreadableMessage(t *testing.T) {
	q, st, tg := openIndexedQueue(t, t.TempDir())
	defer q.Close(context.Background())
	ids := commitN(t, q, 1)
	testutil.Eventually(t, 10*time.Second, "the message deferred and at rest", func() bool {
		attempts, _, _ := tg.count()
		return attempts == 1 && q.Decoded() == 0
	})
	st.sp.mu.Lock()
	st.sp.envs[ids[0]] = []byte(`{"id": damaged`)
	st.sp.mu.Unlock()
	snap, err := q.Snapshot(ids[0])
	if err != nil || snap.State != queue.StateUnreadable || snap.LastError == "" || snap.ID != ids[0] {
		t.Fatalf("snapshot of the unreadable message: %+v, %v", snap, err)
	}
	if all := q.Snapshots(); len(all) != 1 || all[0].State != queue.StateUnreadable {
		t.Fatalf("listing: %+v", all)
	}
	// Each failed read puts the next try further off: 1 minute, then 2.
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute} {
		if n, err := q.Flush(ids[0]); err != nil || n != 1 {
			t.Fatalf("flush: %d, %v", n, err)
		}
		// Flushed, it is due now; once its round failed to read it,
		// due again in `want`.
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("failed read %d: the next attempt in about %v", i+1, want), func() bool {
			s, err := q.Snapshot(ids[0])
			wait := time.Until(s.NextAttempt)
			return err == nil && wait > want-10*time.Second && wait <= want
		})
	}
	ctx := context.Background()
	if _, err := q.Delete(ctx, ids[0], true); err == nil {
		t.Fatal("a delete with a bounce of an unreadable message succeeded")
	}
	if q.Len() != 1 {
		t.Fatalf("after the failed delete: %d queued", q.Len())
	}
	if _, err := q.Delete(ctx, ids[0], false); err != nil {
		t.Fatalf("delete without a bounce: %v", err)
	}
	if q.Len() != 0 {
		t.Fatalf("after the delete: %d queued", q.Len())
	}
	st.sp.mu.Lock()
	_, left := st.sp.envs[ids[0]]
	st.sp.mu.Unlock()
	if left {
		t.Fatal("the store still has the deleted message")
	}
}

// TestHeldNewMailRests: new mail that is held (or quarantined) when it is
// committed waits at rest like any other held message, its envelope not
// kept decoded, and is delivered once released.
func TestHeldNewMailRests(t *testing.T) {
	q, _, tg := openIndexedQueue(t, t.TempDir())
	defer q.Close(context.Background())
	tg.accept.Store(true)
	var ids []string
	for i := range 5 {
		id := queue.NewID()
		w, err := q.Create(id)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "Subject: %d\r\n\r\nbody\r\n", i)
		m := &queue.Message{From: "a@sender.test", Arrived: time.Now(), Held: true,
			Recipients: []*queue.Recipient{{Addr: fmt.Sprintf("u%d@example.test", i)}}}
		if err := q.Commit(w, m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	testutil.Eventually(t, 10*time.Second, "the held messages at rest", func() bool { return q.Decoded() == 0 })
	if attempts, _, _ := tg.count(); attempts != 0 {
		t.Fatalf("%d delivery attempts of held messages", attempts)
	}
	for _, id := range ids {
		if err := q.Release(id); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "the released messages delivered", func() bool { return q.Len() == 0 })
	if _, delivered, _ := tg.count(); delivered != 5 {
		t.Fatalf("%d delivered, want 5", delivered)
	}
}
