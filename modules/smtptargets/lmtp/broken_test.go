package lmtp_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtptargets/lmtp"
)

// dropServer is a go-smtp LMTP server (Dovecot cannot be told to break a
// connection halfway) that drops the connection at RCPT TO:<drop@...> and
// otherwise takes every message; it counts connections and messages.
type dropServer struct {
	conns    atomic.Int32
	mu       sync.Mutex
	messages []string // "rcpt1,rcpt2" per message
}

func (b *dropServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &dropSession{b: b, c: c}, nil
}

type dropSession struct {
	b     *dropServer
	c     *smtp.Conn
	rcpts []string
}

func (s *dropSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *dropSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "drop@") {
		s.c.Close()
		return io.EOF
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *dropSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.b.mu.Lock()
	s.b.messages = append(s.b.messages, strings.Join(s.rcpts, ","))
	s.b.mu.Unlock()
	return nil
}
func (s *dropSession) Reset()        { s.rcpts = nil }
func (s *dropSession) Logout() error { return nil }

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// TestBrokenAtRcptAndReuse: two messages share one connection; when the
// connection breaks at a RCPT, the recipient accepted before it is not
// taken for delivered (no data was sent): it waits, like the rest.
func TestBrokenAtRcptAndReuse(t *testing.T) {
	be := &dropServer{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(be)
	srv.LMTP, srv.Domain, srv.ErrorLog = true, "store.internal", quiet{}
	go srv.Serve(countingListener{Listener: l, n: &be.conns})
	t.Cleanup(func() { srv.Close() })
	g := startGateway(t, map[string]any{"address": l.Addr().String(), "tls": "none"})

	received := func(n int) func() bool {
		return func() bool {
			be.mu.Lock()
			defer be.mu.Unlock()
			return len(be.messages) == n
		}
	}
	// The second message comes while the session of the first is idle
	// (idle_timeout 2s), so that it can take it.
	one := g.send("one", "alice@example.test")
	testutil.Eventually(t, 20*time.Second, "the first message at the server", received(1))
	testutil.Eventually(t, 20*time.Second, "the first message done", func() bool {
		_, err := g.queue.Snapshot(one)
		return err != nil
	})
	g.send("two", "bob@example.test")
	testutil.Eventually(t, 20*time.Second, "the second message at the server", received(2))
	if n := be.conns.Load(); n != 1 {
		t.Errorf("%d connections for two messages in a row, want 1 (reuse)", n)
	}

	id := g.send("dropped", "alice@example.test", "drop@example.test")
	testutil.Eventually(t, 20*time.Second, "the message deferred", func() bool {
		snap, err := g.queue.Snapshot(id)
		return err == nil && snap.State == "deferred"
	})
	snap, _ := g.queue.Snapshot(id)
	for _, r := range snap.Recipients {
		if r.Status != "pending" || !strings.Contains(r.LastReply, "451 4.4.2") {
			t.Errorf("%s: %+v, want pending after the connection broke", r.Addr, r)
		}
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.messages) != 2 {
		t.Errorf("the server got data it should not have: %q", be.messages)
	}
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}
func (quiet) Println(...any)        {}

// TestHandshakeFailureFallsBack: a server whose TLS the target cannot
// speak (TLS 1.1 at most) gets the message in plaintext on a second
// connection at the opportunistic level, and none at required.
func TestHandshakeFailureFallsBack(t *testing.T) {
	be := &dropServer{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := testutil.SelfSigned(t, "127.0.0.1")
	srv := smtp.NewServer(be)
	srv.LMTP, srv.Domain, srv.ErrorLog = true, "store.internal", quiet{}
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	go srv.Serve(countingListener{Listener: l, n: &be.conns})
	t.Cleanup(func() { srv.Close() })

	var m fallbacks
	got, err := open(t, &lmtp.LMTP{Address: l.Addr().String()}, &m)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if got["tls"] != false || !strings.HasPrefix(fmt.Sprint(got["tls_fallback"]), "handshake failed: ") || m.n != 1 {
		t.Errorf("log fields %v, %d fallbacks counted; want plaintext after a failed handshake, counted", got, m.n)
	}
	if n := be.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the failed handshake, then plaintext)", n)
	}
	if _, err := open(t, &lmtp.LMTP{Address: l.Addr().String(), TLS: "required"}, &m); err == nil {
		t.Error("Open at tls required succeeded after a failed handshake")
	}
}
