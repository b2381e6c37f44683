package pgqueue_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpstores/pgqueue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// recorder is a delivery target that accepts everything and records who
// delivered what.
type recorder struct {
	mu  sync.Mutex
	got map[string]int // message ID -> deliveries
}

func (r *recorder) Destination(*queue.Message, string) string { return "" }
func (r *recorder) Open(context.Context, string) (queue.Session, error) {
	return r, nil
}
func (r *recorder) Deliver(_ context.Context, m *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	r.mu.Lock()
	r.got[m.ID]++
	r.mu.Unlock()
	return make([]queue.Result, len(rcpts))
}
func (r *recorder) LogFields() []zap.Field { return nil }
func (r *recorder) Usable() bool           { return true }
func (r *recorder) Close() error           { return nil }

func (r *recorder) count(ids []string) (delivered, dups int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if n := r.got[id]; n > 0 {
			delivered++
			dups += n - 1
		}
	}
	return
}

const lease = 3 * time.Second

func openNode(t *testing.T, dsn, node string) *pgqueue.Store {
	t.Helper()
	s, err := pgqueue.Open(pgqueue.Options{DSN: dsn, Node: node, Lease: lease, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newQueue runs a queue on s, delivering to rec when rec is not nil.
func newQueue(t *testing.T, s queue.Store, rec *recorder) *queue.Queue {
	t.Helper()
	q, err := queue.New(s, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(context.Background()) })
	if rec != nil {
		q.Attach(queue.RouterFunc(func(*queue.Message, string) queue.Target { return rec }),
			queue.Config{RetryInitial: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, Hostname: "mx.test"}, zaptest.NewLogger(t))
	}
	return q
}

func enqueue(t *testing.T, q *queue.Queue) string {
	t.Helper()
	id := queue.NewID()
	w, err := q.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
	if err := q.Commit(w, &queue.Message{From: "s@sender.test", Arrived: time.Now(),
		Recipients: []*queue.Recipient{{Addr: "r@example.test"}}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// A node that dies (no Close, no more renewals) loses its messages to
// another node once its lease expires; the one it was delivering is
// counted as a possible duplicate. A second open of a running node's
// name is refused.
func TestTakeOverFromDeadNode(t *testing.T) {
	srv := testpg.Start(t)
	a := openNode(t, srv.DSN(), "a")
	if _, err := pgqueue.Open(pgqueue.Options{DSN: srv.DSN(), Node: "a"}); err == nil {
		t.Fatal("a second process opened node a")
	}
	qa := newQueue(t, a, nil) // attached to nothing: it delivers nothing
	var ids []string
	for range 5 {
		ids = append(ids, enqueue(t, qa))
	}
	if err := a.Delivering(ids[0]); err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	a.Crash()

	rec := &recorder{got: map[string]int{}}
	b := openNode(t, srv.DSN(), "b")
	newQueue(t, b, rec)
	testutil.Eventually(t, 10*lease, "node b to deliver node a's messages", func() bool {
		n, _ := rec.count(ids)
		return n == len(ids)
	})
	if took := time.Since(crashed); took < lease {
		t.Errorf("taken over after %v, before the lease (%v) expired", took, lease)
	}
	if _, dups := rec.count(ids); dups != 0 {
		t.Errorf("%d messages delivered twice by b", dups)
	}
	if n := b.Duplicates(); n != 1 {
		t.Errorf("Duplicates() = %d, want 1 (the one a was delivering)", n)
	}
	if got := metric(t, "caddy_smtp_queue_taken_over_in_flight_total"); got < 1 {
		t.Errorf("in-flight takeover metric = %v, want at least 1", got)
	}
	testutil.Eventually(t, 5*time.Second, "the delivered messages to leave the database", func() bool {
		var n int
		srv.QueryRow(t, "SELECT count(*) FROM queue_messages", nil, &n)
		return n == 0
	})
}

// A live node keeps its messages: another node does not take them, and
// a node that restarts (same name, after Close) gets them back.
func TestLiveNodeKeepsMessages(t *testing.T) {
	srv := testpg.Start(t)
	a := openNode(t, srv.DSN(), "a")
	qa := newQueue(t, a, nil)
	id := enqueue(t, qa)
	b := openNode(t, srv.DSN(), "b")
	// For two lease periods (a's lease would have expired without its
	// renewals), b never takes a's message.
	start := time.Now()
	testutil.Eventually(t, 10*lease, "two lease periods to pass", func() bool {
		adopted, _, err := b.Sync()
		if err != nil || len(adopted) != 0 {
			t.Fatalf("b took a live node's messages: %v %v", adopted, err)
		}
		return time.Since(start) > 2*lease
	})
	if err := qa.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	a2 := openNode(t, srv.DSN(), "a")
	defer a2.Close()
	msgs, err := a2.Load()
	if err != nil || len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("restarted node a loaded %v, %v", msgs, err)
	}
	b.Close()
}

// metric provisions the module in a fresh Caddy context and reads one of
// the counters it registers there.
func metric(t *testing.T, name string) float64 {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	o := &pgqueue.Opener{DSN: "postgres://127.0.0.1/x", Node: "metrics"}
	if err := o.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
