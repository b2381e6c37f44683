package pgqueue_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/bench/smtpload"
	"github.com/caddy-smtp/caddy-smtp/bench/smtpsink"
	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// BenchmarkFleet: the same 4 KiB load (smtpload, STARTTLS, 21 senders in
// all, 10 messages per connection) into one gateway process and spread
// over three, all on one PostgreSQL queue, relayed to a sink: messages
// per second accepted and delivered by the fleet, and the worst node's
// p99 accept latency.
//
//	go test ./modules/smtpstores/pgqueue -run '^$' -bench BenchmarkFleet -benchtime 3000x -count 3
func BenchmarkFleet(b *testing.B) {
	srv := testpg.Start(b)
	sink, err := smtpsink.Start(smtpsink.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sink.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	for _, n := range []int{1, 3} {
		// Started here, on the outer b: the cleanups of a b.Run's b run
		// after each b.N it tries. The first fleet stops before the second
		// starts, so that each has the machine to itself.
		f := startFleet(b, srv, sink.Addr(), n)
		warmUp(b, ctx, f, sink)
		b.Run(fmt.Sprintf("size=4096/nodes=%d", n), func(b *testing.B) {
			before := sink.Stats()
			sums := make([]*smtpload.Summary, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i, addr := range f.addrs {
				msgs := b.N / n
				if i == 0 {
					msgs += b.N % n
				}
				if msgs == 0 {
					sums[i] = new(smtpload.Summary)
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					sums[i], errs[i] = smtpload.Run(ctx, smtpload.Config{Addr: addr, ServerName: f.hosts[i], Messages: msgs, Size: 4096,
						StartTLS: true, Senders: 21 / n, PerConn: 10, Timeout: time.Minute})
				}()
			}
			wg.Wait()
			var accepted int64
			p99 := 0.0
			for i := range sums {
				if errs[i] != nil {
					b.Fatal(errs[i])
				}
				accepted += sums[i].Accepted
				p99 = max(p99, sums[i].Accept.P99)
			}
			if accepted != int64(b.N) {
				for _, sum := range sums {
					b.Logf("%s", sum)
				}
				b.Fatalf("%d of %d messages accepted", accepted, b.N)
			}
			if _, err := sink.Wait(before.Messages+accepted, 5*time.Minute); err != nil {
				b.Fatalf("delivery: %v", err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
			b.ReportMetric(p99, "p99-accept-ms")
		})
		for _, p := range f.procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, addr := range f.addrs { // stopped: its port is closed
			testutil.Eventually(b, time.Minute, "a node stopping", func() bool {
				c, err := net.Dial("tcp", addr)
				if err == nil {
					c.Close()
				}
				return err != nil
			})
		}
	}
}

// warmUp sends one message through each node: its first handshake waits
// for its certificate from the local CA.
func warmUp(b *testing.B, ctx context.Context, f *fleet, sink *smtpsink.Sink) {
	b.Helper()
	warm := sink.Stats().Messages
	for i, addr := range f.addrs {
		testutil.Eventually(b, time.Minute, "a node taking a message over STARTTLS", func() bool {
			sum, err := smtpload.Run(ctx, smtpload.Config{Addr: addr, ServerName: f.hosts[i], Messages: 1, Size: 4096, StartTLS: true, Senders: 1, Timeout: 10 * time.Second})
			return err == nil && sum.Accepted == 1
		})
		warm++
	}
	if _, err := sink.Wait(warm, time.Minute); err != nil {
		b.Fatalf("warm-up delivery: %v", err)
	}
}
