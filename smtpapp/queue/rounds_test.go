package queue_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// stuckTarget delivers to every domain at once except slow.test, whose
// deliveries wait until release is closed, and later.test, which it
// defers until acceptLater.
type stuckTarget struct {
	release     chan struct{}
	releaseOnce sync.Once
	mu          sync.Mutex
	waiting     int            // deliveries to slow.test waiting
	done        map[string]int // deliveries by domain
	attempts    map[string]int
	acceptLater bool
	deferSlow   bool // slow.test defers instead of waiting
}

func (t *stuckTarget) Destination(_ *queue.Message, rcpt string) string    { return queue.Domain(rcpt) }
func (t *stuckTarget) Open(context.Context, string) (queue.Session, error) { return t, nil }
func (t *stuckTarget) Deliver(_ context.Context, _ *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	d := queue.Domain(rcpts[0].Addr)
	res := make([]queue.Result, len(rcpts))
	t.mu.Lock()
	t.attempts[d]++
	later := d == "later.test" && !t.acceptLater || d == "slow.test" && t.deferSlow
	t.mu.Unlock()
	if later {
		for i := range res {
			res[i] = queue.Result{Err: &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.3.0", Message: "later"}}
		}
		return res
	}
	if d == "slow.test" {
		t.mu.Lock()
		t.waiting++
		t.mu.Unlock()
		<-t.release
	}
	t.mu.Lock()
	t.done[d]++
	t.mu.Unlock()
	for i := range res {
		res[i] = queue.Result{Reply: "250 2.0.0 ok"}
	}
	return res
}
func (t *stuckTarget) LogFields() []zap.Field { return nil }
func (t *stuckTarget) Usable() bool           { return true }
func (t *stuckTarget) Close() error           { return nil }

func newStuckTarget() *stuckTarget {
	return &stuckTarget{release: make(chan struct{}), done: map[string]int{}, attempts: map[string]int{}}
}

// releaseSlow lets the deliveries to slow.test go (once).
func (t *stuckTarget) releaseSlow() { t.releaseOnce.Do(func() { close(t.release) }) }

// stuckQueue runs a queue on an indexed memory store that delivers
// through tg (one session per destination, retries an hour apart), set
// up by setup before it starts; slow.test is released and the queue
// closed when the test ends.
func stuckQueue(t *testing.T, tg *stuckTarget, setup func(*queue.Queue)) *queue.Queue {
	t.Helper()
	st, err := openMemIndexed(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(st, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close(context.Background()) })
	t.Cleanup(tg.releaseSlow) // first: a stuck delivery would hold up Close
	setup(q)
	cfg := queue.Config{RetryInitial: time.Hour, RetryMax: time.Hour, Hostname: "mx.test", PerDestination: 1}
	q.Attach(queue.RouterFunc(func(*queue.Message, string) queue.Target { return tg }), cfg, zaptest.NewLogger(t))
	return q
}

// commitOne queues a small message from a@sender.test to rcpt and
// returns its id.
func commitOne(t *testing.T, q *queue.Queue, rcpt string) string {
	t.Helper()
	id := queue.NewID()
	w, err := q.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "Subject: x\r\n\r\nbody\r\n")
	if err := q.Commit(w, &queue.Message{From: "a@sender.test", Arrived: time.Now(),
		Recipients: []*queue.Recipient{{Addr: rcpt}}}); err != nil {
		t.Fatal(err)
	}
	return id
}

func (t *stuckTarget) delivered(domain string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.done[domain]
}

// TestNewMailTakesNoRoundSlot: new mail, whose envelope is in memory
// anyway, takes none of the maxRounds slots (they bound the envelopes read
// back from the store). So messages stuck at a slow destination do not
// hold up new mail to others, nor a deferred message read back for a
// flush.
func TestNewMailTakesNoRoundSlot(t *testing.T) {
	tg := newStuckTarget()
	q := stuckQueue(t, tg, func(q *queue.Queue) { q.SetMaxRounds(2) })
	send := func(rcpt string) string { return commitOne(t, q, rcpt) }
	// A deferred message at rest, read back from the store for the flush
	// below.
	send("someone@later.test")
	testutil.Eventually(t, 10*time.Second, "the later.test message deferred and at rest", func() bool {
		tg.mu.Lock()
		defer tg.mu.Unlock()
		return tg.attempts["later.test"] == 1 && q.Decoded() == 0
	})

	for i := range 3 {
		send(fmt.Sprintf("u%d@slow.test", i))
	}
	testutil.Eventually(t, 10*time.Second, "a delivery to slow.test waiting", func() bool {
		tg.mu.Lock()
		defer tg.mu.Unlock()
		return tg.waiting == 1 // PerDestination 1: the other two wait for its session
	})
	send("someone@fast.test")
	testutil.Eventually(t, 10*time.Second, "new mail to fast.test delivered while slow.test is stuck", func() bool {
		return tg.delivered("fast.test") == 1
	})
	tg.mu.Lock()
	tg.acceptLater = true
	tg.mu.Unlock()
	if _, err := q.Flush(""); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the message read back from the store delivered while slow.test is stuck", func() bool {
		return tg.delivered("later.test") == 1
	})
	if n := tg.delivered("slow.test"); n != 0 {
		t.Fatalf("%d deliveries to slow.test got through", n)
	}
}

// TestSlowDestinationTakesBoundedSlots: messages read back from the store
// for one slow destination take at most maxKeyRounds of the maxRounds
// slots; a message at rest for another destination is delivered while
// they are stuck, and they go once the destination is fast again.
func TestSlowDestinationTakesBoundedSlots(t *testing.T) {
	tg := newStuckTarget()
	tg.deferSlow = true
	q := stuckQueue(t, tg, func(q *queue.Queue) {
		q.SetMaxRounds(4)
		q.SetMaxKeyRounds(2, 50*time.Millisecond)
	})
	send := func(rcpt string) string { return commitOne(t, q, rcpt) }
	// Six messages to slow.test and one to later.test, all deferred
	// and at rest.
	var slow []string
	for i := range 6 {
		slow = append(slow, send(fmt.Sprintf("u%d@slow.test", i)))
	}
	later := send("someone@later.test")
	testutil.Eventually(t, 10*time.Second, "every message deferred and at rest", func() bool {
		tg.mu.Lock()
		defer tg.mu.Unlock()
		return tg.attempts["slow.test"] == 6 && tg.attempts["later.test"] == 1 && q.Decoded() == 0
	})
	tg.mu.Lock()
	tg.deferSlow, tg.acceptLater = false, true // slow.test now hangs
	tg.mu.Unlock()
	// The slow.test messages first: their rounds take what slots they
	// may before the later.test message is due.
	for _, id := range slow {
		if _, err := q.Flush(id); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "a delivery to slow.test waiting", func() bool {
		tg.mu.Lock()
		defer tg.mu.Unlock()
		return tg.waiting == 1
	})
	if _, err := q.Flush(later); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the later.test message delivered while slow.test is stuck", func() bool {
		return tg.delivered("later.test") == 1
	})
	if n := tg.delivered("slow.test"); n != 0 {
		t.Fatalf("%d deliveries to slow.test got through", n)
	}
	if d := q.Decoded(); d > 2 {
		t.Fatalf("%d envelopes read back while slow.test is stuck, want at most maxKeyRounds (2)", d)
	}
	tg.releaseSlow()
	testutil.Eventually(t, 10*time.Second, "all six slow.test messages delivered once it is fast", func() bool {
		return tg.delivered("slow.test") == 6
	})
}
