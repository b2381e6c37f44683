// Package smtpsink is the backend of the benchmark: an SMTP server that
// offers STARTTLS with a self-signed certificate, reads and discards every
// message and counts what arrived and when, so that the end-to-end rate of a
// relay in front of it can be measured.
package smtpsink

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// Config configures a Sink.
type Config struct {
	// Addr is the listen address. Default: 127.0.0.1:0.
	Addr string
	// Hostname is the greeting name and the certificate's name.
	// Default: sink.test.
	Hostname string
	// NoTLS turns STARTTLS off.
	NoTLS bool
	// MaxMessageBytes is the largest message accepted. Default: 64 MiB.
	MaxMessageBytes int64
	// Timeout bounds every read and write. Default: 5 minutes.
	Timeout time.Duration
}

// Stats are the counters of a sink since it started.
type Stats struct {
	// Messages is the number of messages received and acknowledged.
	Messages int64 `json:"messages"`
	// Recipients is the number of accepted RCPT commands of those messages.
	Recipients int64 `json:"recipients"`
	// Bytes is the message data received, after dot-unstuffing.
	Bytes int64 `json:"bytes"`
	// TLSMessages is how many of the messages came over TLS.
	TLSMessages int64 `json:"tls_messages"`
	// Connections is the number of SMTP sessions opened (a STARTTLS
	// starts a second session on the same connection and counts again).
	Connections int64 `json:"sessions"`
	// Errors counts connections that ended with an error.
	Errors int64 `json:"errors"`
	// FirstUnixNano and LastUnixNano are when the first and the last
	// message were acknowledged (0 before the first).
	FirstUnixNano int64 `json:"first_unix_ns"`
	LastUnixNano  int64 `json:"last_unix_ns"`
}

// Sink is a running SMTP sink.
type Sink struct {
	server *smtp.Server
	ln     net.Listener
	served chan struct{}

	messages, rcpts, bytes, tlsMsgs, sessions, errs atomic.Int64

	mu          sync.Mutex
	first, last int64
	lastHead    []byte // the start of the last message
}

// headKeep is how much of each message the sink keeps for Last.
const headKeep = 4096

// Start listens and serves until Close.
func Start(cfg Config) (*Sink, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "sink.test"
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 64 << 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	s := &Sink{served: make(chan struct{})}
	srv := smtp.NewServer(&backend{s: s})
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = 1000
	srv.ReadTimeout, srv.WriteTimeout = cfg.Timeout, cfg.Timeout
	srv.ErrorLog = errorCounter{s}
	if !cfg.NoTLS {
		cert, err := SelfSigned(cfg.Hostname)
		if err != nil {
			return nil, err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s.server, s.ln = srv, ln
	go func() {
		defer close(s.served)
		_ = srv.Serve(ln)
	}()
	return s, nil
}

// Addr returns the address the sink listens on.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Close stops the sink and closes every connection.
func (s *Sink) Close() error {
	err := s.server.Close()
	<-s.served
	return err
}

// Last returns the first 4 KiB of the last message received.
func (s *Sink) Last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.lastHead)
}

// Stats returns the counters.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	first, last := s.first, s.last
	n := s.messages.Load()
	s.mu.Unlock()
	return Stats{
		Messages:      n,
		Recipients:    s.rcpts.Load(),
		Bytes:         s.bytes.Load(),
		TLSMessages:   s.tlsMsgs.Load(),
		Connections:   s.sessions.Load(),
		Errors:        s.errs.Load(),
		FirstUnixNano: first,
		LastUnixNano:  last,
	}
}

// ErrTimeout is returned by Wait when the messages did not all arrive.
var ErrTimeout = errors.New("timed out waiting for messages")

// Wait returns once at least n messages have arrived, or ErrTimeout after
// timeout with the counters as they are.
func (s *Sink) Wait(n int64, timeout time.Duration) (Stats, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if st := s.Stats(); st.Messages >= n {
			return st, nil
		}
		select {
		case <-deadline.C:
			return s.Stats(), ErrTimeout
		case <-s.served:
			return s.Stats(), errors.New("sink closed")
		case <-tick.C:
		}
	}
}

// delivered records one acknowledged message.
func (s *Sink) delivered(rcpts int, size int64, overTLS bool) {
	now := time.Now().UnixNano()
	s.rcpts.Add(int64(rcpts))
	s.bytes.Add(size)
	if overTLS {
		s.tlsMsgs.Add(1)
	}
	s.mu.Lock()
	if s.first == 0 {
		s.first = now
	}
	s.last = now
	s.messages.Add(1) // under mu: Stats sees count and time together
	s.mu.Unlock()
}

type backend struct{ s *Sink }

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.s.sessions.Add(1)
	_, overTLS := c.TLSConnectionState()
	return &session{s: b.s, tls: overTLS}, nil
}

type session struct {
	s     *Sink
	tls   bool
	rcpts int
}

func (x *session) Mail(string, *smtp.MailOptions) error { return nil }

func (x *session) Rcpt(string, *smtp.RcptOptions) error {
	x.rcpts++
	return nil
}

func (x *session) Data(r io.Reader) error {
	head := make([]byte, headKeep)
	h, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return err
	}
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return err
	}
	n += int64(h)
	x.s.mu.Lock()
	x.s.lastHead = head[:h]
	x.s.mu.Unlock()
	x.s.delivered(x.rcpts, n, x.tls)
	x.rcpts = 0
	return nil
}

func (x *session) Reset()        { x.rcpts = 0 }
func (x *session) Logout() error { return nil }

// errorCounter is go-smtp's error log: it counts and discards (a load test
// that closes connections abruptly should not flood the terminal).
type errorCounter struct{ s *Sink }

func (e errorCounter) Printf(string, ...any) { e.s.errs.Add(1) }
func (e errorCounter) Println(...any)        { e.s.errs.Add(1) }
