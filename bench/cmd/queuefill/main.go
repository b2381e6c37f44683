// Command queuefill writes deferred messages into a segments spool through
// the store's own API (Create, Write, Commit: each commit fsynced, many at
// once so that they share syncs), for bench/queued.sh: filling a million
// messages over SMTP would take most of an hour. Every message looks like
// one that was attempted once and deferred: one recipient, a 451 as its
// last reply, Authentication-Results in its added headers, due an hour
// from now, except every -due-every'th, which is due at once (so that a
// restart has deliveries to start).
//
//	queuefill -dir /tmp/spool -n 100000 -size 2048
//
// Caddy must not be running on the spool (the store takes its lock).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func main() {
	var (
		dir      = flag.String("dir", "", "spool directory (created if missing)")
		n        = flag.Int("n", 100000, "messages to write")
		size     = flag.Int("size", 2048, "body size in bytes")
		dueEvery = flag.Int("due-every", 1000, "every n-th message is due at once (0: none)")
		domain   = flag.String("domain", "example.test", "recipient domain")
		workers  = flag.Int("workers", 256, "concurrent commits")
	)
	flag.Parse()
	if *dir == "" || *n < 0 || *size < 64 || *workers < 1 {
		fmt.Fprintln(os.Stderr, "queuefill: -dir is required; -n >= 0, -size >= 64, -workers >= 1")
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fatal(err)
	}
	st, err := segments.Open(*dir)
	if err != nil {
		fatal(err)
	}
	body := makeBody(*size)
	now := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	started := time.Now()
	for range *workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(*n) {
					return
				}
				due := now.Add(time.Hour)
				if *dueEvery > 0 && i%int64(*dueEvery) == 0 {
					due = now.Add(-time.Minute)
				}
				if err := write(st, i, body, *domain, now, due); err != nil {
					fmt.Fprintln(os.Stderr, "queuefill:", err)
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if err := st.Close(); err != nil {
		fatal(err)
	}
	took := time.Since(started)
	fmt.Printf("{\"messages\":%d,\"failed\":%d,\"seconds\":%.3f}\n", *n, failed.Load(), took.Seconds())
	if failed.Load() > 0 {
		os.Exit(1)
	}
}

// write commits message i.
func write(st queue.Store, i int64, body []byte, domain string, now, due time.Time) error {
	w, err := st.Create(queue.NewID())
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		w.Abort()
		return err
	}
	arrived := now.Add(-10 * time.Minute)
	m := &queue.Message{
		From:        fmt.Sprintf("sender%d@sender.test", i%1000),
		Recipients:  []*queue.Recipient{{Addr: fmt.Sprintf("user%d@%s", i, domain), LastReply: "451 4.4.1 connection refused", Enhanced: "4.4.1"}},
		Arrived:     arrived,
		Body:        "8BITMIME",
		Client:      queue.ClientInfo{Addr: "127.0.0.1", Helo: "client.sender.test", TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_128_GCM_SHA256"},
		Server:      "gateway",
		MessageID:   fmt.Sprintf("<%d.bench@sender.test>", i),
		Attempts:    1,
		NextAttempt: due,
		Headers: "Authentication-Results: gateway.test; spf=pass smtp.mailfrom=sender.test;\r\n" +
			"\tdkim=none; dmarc=none header.from=sender.test\r\n",
		Checks: []queue.CheckResult{{Check: "spf", Verdict: "accept", Result: "pass"}},
	}
	return w.Commit(m)
}

// makeBody is a plain text message of about size bytes, CRLF lines.
func makeBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: <sender@sender.test>\r\nTo: <user@example.test>\r\nSubject: queued\r\n\r\n")
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()[:size]
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "queuefill:", err)
	os.Exit(1)
}
