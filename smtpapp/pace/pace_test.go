package pace

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// clock is a fake time source: waiting advances it by the delay asked for.
type clock struct {
	t      time.Time
	waited time.Duration
	waits  int
}

func newTestPacer(threshold, rate int64) (*Pacer, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	p := newPacer(threshold, rate, func() time.Time { return c.t })
	p.wait = func(_ context.Context, d time.Duration) time.Duration {
		c.t = c.t.Add(d)
		c.waited += d
		c.waits++
		return d
	}
	return p, c
}

// readAll reads a body of size bytes through p, in reads of at most 32 KiB
// (as the server's copy does), and checks that every byte came through.
func readAll(t *testing.T, p *Pacer, size int) {
	t.Helper()
	body := bytes.Repeat([]byte("x"), size)
	got, err := io.ReadAll(p.Reader(context.Background(), bytes.NewReader(body)))
	if err != nil || len(got) != size {
		t.Fatalf("read %d of %d bytes, err %v", len(got), size, err)
	}
}

func TestSmallMessagesAreNotPaced(t *testing.T) {
	p, c := newTestPacer(1<<20, 1<<20)
	for range 50 {
		readAll(t, p, 4096)
	}
	if c.waits != 0 {
		t.Fatalf("small messages waited %d times (%v)", c.waits, c.waited)
	}
}

func TestLargeMessageAloneIsNotPaced(t *testing.T) {
	p, c := newTestPacer(1<<20, 1<<20)
	readAll(t, p, 10<<20)
	if c.waits != 0 {
		t.Fatalf("a large message with no small one around waited %d times (%v)", c.waits, c.waited)
	}
}

// TestLargeMessagePacedAfterSmallOne: after a small message, the bytes of a
// large one beyond the threshold come at the rate (the first Chunk is the
// limiter's burst).
func TestLargeMessagePacedAfterSmallOne(t *testing.T) {
	const threshold, rate = 1 << 20, 4 << 20
	p, c := newTestPacer(threshold, rate)
	readAll(t, p, 4096)
	start := c.t
	readAll(t, p, 3<<20) // 2 MiB beyond the threshold, within Window at 4 MiB/s
	beyond := float64(3<<20-threshold-Chunk) / rate
	got := c.t.Sub(start).Seconds()
	if got < beyond*0.99 || got > beyond*1.01+float64(Chunk)/rate {
		t.Fatalf("2 MiB beyond the threshold took %.3f s of pacing, want about %.3f s", got, beyond)
	}
	if Waited() < c.waited {
		t.Fatalf("Waited() = %v, less than the %v waited here", Waited(), c.waited)
	}
}

// TestPacingEndsAfterWindow: a large message more than Window after the
// last small one is not paced, and pacing stops within a large message
// once Window has passed.
func TestPacingEndsAfterWindow(t *testing.T) {
	const threshold, rate = 1 << 20, 1 << 20
	p, c := newTestPacer(threshold, rate)
	readAll(t, p, 100)
	c.t = c.t.Add(Window)
	readAll(t, p, 4<<20)
	if c.waits != 0 {
		t.Fatalf("waited %d times a Window after the last small message", c.waits)
	}

	readAll(t, p, 100)
	start := c.t
	readAll(t, p, 8<<20) // 7 MiB beyond, at 1 MiB/s: paced for about a Window only
	if d := c.t.Sub(start); d < Window || d > Window+time.Duration(float64(2*Chunk)/rate*float64(time.Second)) {
		t.Fatalf("paced for %v, want the rest of the Window (%v) and at most one read more", d, Window)
	}
}

// TestSharedRate: two large messages read in turns share the one rate.
func TestSharedRate(t *testing.T) {
	const threshold, rate = 64 << 10, 2 << 20
	p, c := newTestPacer(threshold, rate)
	readAll(t, p, 10)
	body := bytes.Repeat([]byte("y"), 1<<20+threshold)
	a := p.Reader(context.Background(), bytes.NewReader(body))
	b := p.Reader(context.Background(), bytes.NewReader(body))
	start := c.t
	buf := make([]byte, 32<<10)
	for done := 0; done < 2; {
		done = 0
		for _, r := range []*Reader{a, b} {
			if _, err := r.Read(buf); err == io.EOF {
				done++
			}
		}
	}
	want := float64(2<<20-Chunk) / rate // 1 MiB beyond the threshold each
	if got := c.t.Sub(start).Seconds(); got < want*0.99 || got > want*1.01+float64(Chunk)/rate {
		t.Fatalf("two messages with 1 MiB beyond the threshold each took %.3f s, want about %.3f s at the shared rate", got, want)
	}
}

// TestFailedMessageIsNotSmall: a body that ends in an error (the client
// went away) does not count as a small message received.
func TestFailedMessageIsNotSmall(t *testing.T) {
	p, c := newTestPacer(1<<20, 1<<20)
	r := p.Reader(context.Background(), io.MultiReader(bytes.NewReader([]byte("abc")), errReader{}))
	if _, err := io.ReadAll(r); err == nil {
		t.Fatal("want the read error")
	}
	readAll(t, p, 4<<20)
	if c.waits != 0 {
		t.Fatalf("a failed small body made a large one wait %d times", c.waits)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// TestWaitEndsWithContext: the real wait returns when the context ends.
func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() {
		if d := sleep(ctx, time.Hour); d >= time.Hour {
			t.Errorf("sleep reports %v waited", d)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("sleep did not return when its context ended")
	}
}

// TestWaitedCountsTimeWaited: Waited adds up what the waits took (a wait
// cut short by a closing server counts what it waited), not the delays
// asked for.
func TestWaitedCountsTimeWaited(t *testing.T) {
	p, c := newTestPacer(64<<10, 1<<20)
	asked := time.Duration(0)
	p.wait = func(_ context.Context, d time.Duration) time.Duration {
		asked += d
		c.t = c.t.Add(d)
		return d / 4
	}
	readAll(t, p, 10)
	before := Waited()
	readAll(t, p, 1<<20)
	if asked == 0 {
		t.Fatal("no wait")
	}
	if got := Waited() - before; got != asked/4 && (got < asked/4-time.Microsecond || got > asked/4+time.Microsecond) {
		t.Fatalf("Waited grew by %v; the waits took %v (of %v asked)", got, asked/4, asked)
	}
}
