package pgqueue_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpstores/pgqueue"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// BenchmarkCommit compares committing 4 KiB messages (the durable part of
// accepting one) to PostgreSQL and to the segment spool, from parallel
// sessions: go test -run - -bench Commit -cpu 8,32.
func BenchmarkCommit(b *testing.B) {
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 64)
	run := func(b *testing.B, s queue.Store) {
		b.SetBytes(int64(len(body)))
		b.ResetTimer() // not the server's start
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				w, err := s.Create(queue.NewID())
				if err != nil {
					b.Fatal(err)
				}
				w.Write(body)
				m := &queue.Message{From: "s@sender.test", Arrived: time.Now(), Recipients: []*queue.Recipient{{Addr: "r@example.test"}}}
				if err := w.Commit(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("postgres", func(b *testing.B) {
		srv := testpg.Start(b)
		s, err := pgqueue.Open(pgqueue.Options{DSN: srv.DSN() + "&pool_max_conns=32", Node: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
	b.Run("segments", func(b *testing.B) {
		s, err := segments.OpenWith(b.TempDir(), segments.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
}
