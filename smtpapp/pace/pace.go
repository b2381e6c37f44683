// Package pace paces the bodies of large messages while small ones are
// being received.
//
// A few clients streaming big attachments can take every CPU cycle and
// the disk's bandwidth that the replies to everybody else wait for: TLS
// decryption, the spool writes and their fsyncs, and the re-encryption
// towards the next hop all grow with the bytes, not the messages. A Pacer
// shares a byte rate among the parts of message bodies beyond a
// threshold, and applies it only while messages under the threshold are
// arriving (one was received within the last second). Without small
// messages the large ones go as fast as they can; with them, the large
// ones together get the rate, and TCP flow control slows their senders.
//
// The package has no Caddy imports; smtpapp wraps each body reader.
package pace

import (
	"context"
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Chunk is the most a paced read takes at once, and the limiter's burst.
const Chunk = 64 << 10

// Window is how long after the last small message large bodies stay paced.
const Window = time.Second

// waited is the time large bodies waited, process-wide, in nanoseconds.
var waited atomic.Int64

// Waited returns how long large message bodies waited for their share,
// in total, since the process started.
func Waited() time.Duration { return time.Duration(waited.Load()) }

// Pacer shares one byte rate among the large messages being received.
// It is safe for concurrent use.
type Pacer struct {
	threshold int64
	limiter   *rate.Limiter
	start     time.Time    // a monotonic base for lastSmall
	lastSmall atomic.Int64 // 1 + nanoseconds from start to the end of the last small message (0: none)

	now  func() time.Time
	wait func(ctx context.Context, d time.Duration) time.Duration // returns early when ctx ends; how long it waited
}

// MinRate is the lowest rate a Pacer takes: one Chunk a second, so that
// no read waits longer than about a second for its own share.
const MinRate = Chunk

// New returns a Pacer for bodies longer than threshold bytes, which share
// bytesPerSecond (at least MinRate) while small messages arrive.
func New(threshold, bytesPerSecond int64) *Pacer {
	return newPacer(threshold, bytesPerSecond, time.Now)
}

func newPacer(threshold, bytesPerSecond int64, now func() time.Time) *Pacer {
	return &Pacer{
		threshold: threshold,
		limiter:   rate.NewLimiter(rate.Limit(max(bytesPerSecond, MinRate)), Chunk),
		start:     now(),
		now:       now,
		wait:      sleep,
	}
}

// sleep waits for d or until ctx ends, and returns how long it waited.
func sleep(ctx context.Context, d time.Duration) time.Duration {
	start := time.Now()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return time.Since(start)
}

// Reader returns a reader of one message's body. When ctx ends (the
// server shuts down), reads stop waiting.
func (p *Pacer) Reader(ctx context.Context, r io.Reader) *Reader {
	return &Reader{p: p, r: r, ctx: ctx}
}

// since returns the time from the Pacer's start to now in nanoseconds,
// on the monotonic clock (a step of the wall clock does not move it).
func (p *Pacer) since(now time.Time) int64 { return int64(now.Sub(p.start)) }

// contended reports whether a small message ended within Window of now.
func (p *Pacer) contended(now time.Time) bool {
	last := p.lastSmall.Load() // since()+1 of the last small message's end; 0: none yet
	return last != 0 && p.since(now)-(last-1) < int64(Window)
}

// Reader reads one message's body: freely up to the threshold, then at
// the shared rate while small messages arrive.
type Reader struct {
	p   *Pacer
	r   io.Reader
	ctx context.Context
	n   int64 // bytes read so far
}

// Read implements io.Reader.
func (r *Reader) Read(b []byte) (int, error) {
	p := r.p
	paced := false
	if left := p.threshold - r.n; left > 0 {
		// A small message, or the start of a large one: unpaced, up to
		// the threshold.
		if int64(len(b)) > left {
			b = b[:left]
		}
	} else if p.contended(p.now()) {
		paced = true
		if len(b) > Chunk {
			b = b[:Chunk]
		}
	}
	n, err := r.r.Read(b)
	r.n += int64(n)
	if err == io.EOF && r.n <= p.threshold {
		p.lastSmall.Store(p.since(p.now()) + 1)
	}
	if paced && n > 0 {
		now := p.now()
		if d := p.limiter.ReserveN(now, n).DelayFrom(now); d > 0 {
			waited.Add(int64(p.wait(r.ctx, d)))
		}
	}
	return n, err
}
