// Package smtpload is the SMTP load generator of the benchmark: concurrent
// senders that each open a connection (with STARTTLS), send a number of
// messages over it and start over, timing every reply; and an idle mode
// that holds many connections open to measure memory per connection.
package smtpload

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config configures a load run.
type Config struct {
	// Addr is the server to load (host:port).
	Addr string
	// Senders is the number of concurrent connections. Default: 20.
	Senders int
	// PerConn is the number of messages sent over one connection before
	// it is closed and a new one opened. Default: 10.
	PerConn int
	// Messages is the total number of messages to send. When zero,
	// senders go on until Duration has passed.
	Messages int
	// Duration bounds the run when Messages is zero.
	Duration time.Duration
	// Size is the size of every message in bytes, headers included.
	// Default: 4096.
	Size int
	// StartTLS upgrades every connection with STARTTLS (and fails the
	// connection when it is not offered). The certificate is not
	// verified: this is a load tool, the server's certificate is
	// usually from a private CA, and verification cost would be ours.
	// TLS sessions are never resumed: every connection pays a full
	// handshake, like a first contact between two MTAs.
	StartTLS bool
	// ServerName is the SNI sent. Default: localhost.
	ServerName string
	// Helo is our EHLO name. Default: smtpload.test.
	Helo string
	// From and Rcpt are the envelope addresses. Defaults:
	// load@sender.test and user@example.test.
	From, Rcpt string
	// Timeout bounds every reply and the TLS handshake. Default: 60s.
	Timeout time.Duration
	// Sign, when set, is applied to every message before it is sent (to
	// add a DKIM signature, say); it must be safe for concurrent use.
	// Its CPU counts as the load tool's.
	Sign func(msg []byte) ([]byte, error)
}

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		return errors.New("no address to load")
	}
	if c.Messages < 0 || c.Senders < 0 || c.PerConn < 0 || c.Size < 0 || c.Duration < 0 {
		return errors.New("counts and durations must not be negative")
	}
	if c.Messages == 0 && c.Duration == 0 {
		return errors.New("give a number of messages or a duration")
	}
	if c.Senders == 0 {
		c.Senders = 20
	}
	if c.PerConn == 0 {
		c.PerConn = 10
	}
	if c.Size == 0 {
		c.Size = 4096
	}
	if c.ServerName == "" {
		c.ServerName = "localhost"
	}
	if c.Helo == "" {
		c.Helo = "smtpload.test"
	}
	if c.From == "" {
		c.From = "load@sender.test"
	}
	if c.Rcpt == "" {
		c.Rcpt = "user@example.test"
	}
	if c.Timeout == 0 {
		c.Timeout = time.Minute
	}
	return nil
}

func (c *Config) tlsConfig() *tls.Config {
	if !c.StartTLS {
		return nil
	}
	return &tls.Config{
		ServerName: c.ServerName,
		// A load tool: the server's certificate comes from a private or
		// self-signed CA, and checking it is not what is measured.
		InsecureSkipVerify: true, //nolint:gosec // see above
		MinVersion:         tls.VersionTLS12,
	}
}

// Latency summarises durations in milliseconds.
type Latency struct {
	Count int     `json:"n"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// Summarize computes the latency figures of a set of durations (sorted in
// place). Percentiles are nearest-rank.
func Summarize(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.999999) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return Latency{
		Count: len(d),
		Mean:  ms(sum / time.Duration(len(d))),
		P50:   ms(rank(0.50)),
		P90:   ms(rank(0.90)),
		P99:   ms(rank(0.99)),
		Max:   ms(d[len(d)-1]),
	}
}

// Summary is the result of a load run.
type Summary struct {
	Mode     string `json:"mode"`
	Addr     string `json:"addr"`
	Senders  int    `json:"senders"`
	PerConn  int    `json:"per_conn"`
	Size     int    `json:"size"`
	StartTLS bool   `json:"starttls"`

	// Attempted counts messages tried (a connection that could not be
	// set up counts as one failed message, so a dead server ends the run).
	Attempted int64 `json:"attempted"`
	// Accepted counts messages the server answered 250 to after DATA.
	Accepted int64 `json:"accepted"`
	// Failed is Attempted - Accepted; Errors breaks it down by reply code
	// or by what failed.
	Failed int64            `json:"failed"`
	Errors map[string]int64 `json:"errors"`
	// Connections counts sessions set up (greeting, EHLO, STARTTLS, EHLO).
	Connections int64 `json:"connections"`

	// StartUnixNano is when the first sender started; EndUnixNano when
	// the last reply came.
	StartUnixNano int64   `json:"start_unix_ns"`
	EndUnixNano   int64   `json:"end_unix_ns"`
	Seconds       float64 `json:"seconds"`
	// AcceptedPerSec is Accepted over Seconds.
	AcceptedPerSec float64 `json:"accepted_per_sec"`

	// Accept is the accept latency: from writing the final "." of DATA to
	// the 250 reply (the time the server takes to make the message safe).
	Accept Latency `json:"accept_latency_ms"`
	// Transaction is from sending MAIL FROM to that 250 reply.
	Transaction Latency `json:"transaction_latency_ms"`
	// Setup is from dialing to the reply to the EHLO after STARTTLS.
	Setup Latency `json:"setup_latency_ms"`

	// LoadCPUSeconds is the CPU time this load generator used.
	LoadCPUSeconds float64 `json:"load_cpu_seconds"`
}

type senderStats struct {
	accept, txn, setup []time.Duration
	errors             map[string]int64
	accepted, tried    int64
	conns              int64
}

// Run sends the load and returns its summary. It stops early when ctx is
// cancelled.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	msgs := newMessageMaker(cfg)
	var deadline time.Time
	if cfg.Messages == 0 {
		deadline = time.Now().Add(cfg.Duration)
	}
	var tickets atomic.Int64
	// take hands out the next message number, or -1 when the run is over.
	take := func() int64 {
		if ctx.Err() != nil {
			return -1
		}
		if cfg.Messages > 0 {
			n := tickets.Add(1)
			if n > int64(cfg.Messages) {
				return -1
			}
			return n
		}
		if time.Now().After(deadline) {
			return -1
		}
		return tickets.Add(1)
	}
	cpu0 := selfCPU()
	start := time.Now()
	var lastReply atomic.Int64
	stats := make([]*senderStats, cfg.Senders)
	var wg sync.WaitGroup
	for i := range stats {
		st := &senderStats{errors: make(map[string]int64)}
		stats[i] = st
		wg.Go(func() { sender(ctx, cfg, i, msgs, take, st, &lastReply) })
	}
	wg.Wait()
	end := time.Unix(0, lastReply.Load())
	if end.Before(start) {
		end = time.Now()
	}
	s := &Summary{
		Mode: "load", Addr: cfg.Addr, Senders: cfg.Senders, PerConn: cfg.PerConn,
		Size: cfg.Size, StartTLS: cfg.StartTLS, Errors: make(map[string]int64),
		StartUnixNano: start.UnixNano(), EndUnixNano: end.UnixNano(),
		Seconds:        end.Sub(start).Seconds(),
		LoadCPUSeconds: (selfCPU() - cpu0).Seconds(),
	}
	var accept, txn, setup []time.Duration
	for _, st := range stats {
		s.Accepted += st.accepted
		s.Attempted += st.tried
		s.Connections += st.conns
		for k, v := range st.errors {
			s.Errors[k] += v
		}
		accept = append(accept, st.accept...)
		txn = append(txn, st.txn...)
		setup = append(setup, st.setup...)
	}
	s.Failed = s.Attempted - s.Accepted
	if s.Seconds > 0 {
		s.AcceptedPerSec = float64(s.Accepted) / s.Seconds
	}
	s.Accept, s.Transaction, s.Setup = Summarize(accept), Summarize(txn), Summarize(setup)
	return s, ctx.Err()
}

// sender is one concurrent sender: connect, send up to PerConn messages,
// QUIT, again, until take says the run is over.
func sender(ctx context.Context, cfg Config, id int, msgs *messageMaker, take func() int64, st *senderStats, lastReply *atomic.Int64) {
	tlsConf := cfg.tlsConfig()
	buf := make([]byte, 0, cfg.Size+256)
	for {
		n := take()
		if n < 0 {
			return
		}
		t0 := time.Now()
		c, err := dialClient(ctx, cfg.Addr, cfg.Helo, tlsConf, cfg.Timeout)
		if err != nil {
			st.tried++
			st.errors[errorKey(err)]++
			// A server that refuses connections should not be hammered
			// in a tight loop.
			Pause(ctx, 20*time.Millisecond)
			continue
		}
		st.setup = append(st.setup, time.Since(t0))
		st.conns++
		for i := 0; ; i++ {
			st.tried++
			buf = msgs.make(buf[:0], n, id)
			msg := buf
			if cfg.Sign != nil {
				signed, err := cfg.Sign(buf)
				if err != nil {
					st.errors["sign"]++
					c.quit()
					return
				}
				msg = signed
			}
			if err := send(c, cfg, msg, st); err != nil {
				st.errors[errorKey(err)]++
				var re *ReplyError
				if !errors.As(err, &re) || re.Code == 421 {
					c.close()
					break
				}
				if _, _, err := c.cmd(250, "RSET"); err != nil {
					c.close()
					break
				}
			} else {
				st.accepted++
				lastReply.Store(time.Now().UnixNano())
			}
			if i+1 >= cfg.PerConn {
				c.quit()
				break
			}
			if n = take(); n < 0 {
				c.quit()
				return
			}
		}
	}
}

// send runs one transaction.
func send(c *client, cfg Config, msg []byte, st *senderStats) error {
	t0 := time.Now()
	if _, _, err := c.cmd(250, "MAIL FROM:<"+cfg.From+">"); err != nil {
		return err
	}
	if _, _, err := c.cmd(250, "RCPT TO:<"+cfg.Rcpt+">"); err != nil {
		return err
	}
	if _, _, err := c.cmd(354, "DATA"); err != nil {
		return err
	}
	accept, err := c.sendData(msg)
	if err != nil {
		return err
	}
	st.accept = append(st.accept, accept)
	st.txn = append(st.txn, time.Since(t0))
	return nil
}

// Pause waits for d or until ctx is done, whichever comes first.
func Pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// selfCPU returns the user+system CPU time of this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// messageMaker builds messages of the configured size: unique headers, a
// fixed filler body of 76-character lines, CRLF line ends, nothing that
// needs dot-stuffing.
type messageMaker struct {
	from, rcpt, date string
	stamp            string // start time, base 36, for unique Message-IDs
	size             int
}

func newMessageMaker(cfg Config) *messageMaker {
	return &messageMaker{from: cfg.From, rcpt: cfg.Rcpt, size: cfg.Size,
		date: time.Now().Format(time.RFC1123Z), stamp: strconv.FormatInt(time.Now().Unix(), 36)}
}

const fillerLine = "The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs"

func (m *messageMaker) make(buf []byte, n int64, sender int) []byte {
	buf = append(buf, "From: <"...)
	buf = append(buf, m.from...)
	buf = append(buf, ">\r\nTo: <"...)
	buf = append(buf, m.rcpt...)
	buf = append(buf, ">\r\nSubject: smtpload message "...)
	buf = strconv.AppendInt(buf, n, 10)
	buf = append(buf, "\r\nMessage-ID: <"...)
	buf = strconv.AppendInt(buf, n, 10)
	buf = append(buf, '.')
	buf = strconv.AppendInt(buf, int64(sender), 10)
	buf = append(buf, '.')
	buf = append(buf, m.stamp...)
	buf = append(buf, "@smtpload.test>\r\nDate: "...)
	buf = append(buf, m.date...)
	buf = append(buf, "\r\n\r\n"...)
	for len(buf)+len(fillerLine)+2 <= m.size {
		buf = append(buf, fillerLine...)
		buf = append(buf, "\r\n"...)
	}
	if rest := m.size - len(buf) - 2; rest > 0 {
		buf = append(buf, fillerLine[:min(rest, len(fillerLine))]...)
		buf = append(buf, "\r\n"...)
	}
	return buf
}

// String renders the error counts for a log line.
func (s *Summary) String() string {
	return fmt.Sprintf("%d/%d accepted in %.2fs (%.0f msg/s), accept p50 %.1fms p99 %.1fms, errors %v",
		s.Accepted, s.Attempted, s.Seconds, s.AcceptedPerSec, s.Accept.P50, s.Accept.P99, s.Errors)
}
