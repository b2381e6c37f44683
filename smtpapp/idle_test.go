package smtpapp_test

import (
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestIdleConnectionHeap measures what an idle STARTTLS connection (after
// greeting, EHLO, STARTTLS, EHLO) costs the heap with our server, against
// a bare go-smtp server with the same TLS config and the same client. The
// difference is our own per-connection state: about 1.5 KiB (connection
// tracking, filter, session); it was 10 KiB with a second buffered writer
// for the reply rewriting after TLS, the plaintext filter's buffers kept
// after STARTTLS and the session logger encoded at EHLO.
func TestIdleConnectionHeap(t *testing.T) {
	e := newTestEnv(t)
	e.start(map[string]any{"max_connections_per_ip": -1, "connection_rate_per_ip": -1})
	srv := runningApp(t).Servers["mx"]
	ours := srv.Addrs()[0].String()

	bare := smtp.NewServer(nopBackend{})
	bare.Domain = testHost
	bare.TLSConfig = srv.TestTLSConfig()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &openConnListener{Listener: l}
	go func() { _ = bare.Serve(ln) }()
	t.Cleanup(func() { bare.Close() })

	clientTLS := &tls.Config{ServerName: testHost, RootCAs: e.rootPool()}
	const n = 200
	perConn := func(addr string, open func() int) float64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		conns := make([]*dialog, n)
		for i := range conns {
			d := dial(t, addr)
			d.expect("220")
			d.cmd("EHLO client.example", "250")
			d.startTLS(clientTLS)
			d.cmd("EHLO client.example", "250")
			conns[i] = d
		}
		eventually(t, "every connection open on the server", func() bool { return open() == n })
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		after := ms.HeapAlloc
		for _, d := range conns {
			d.send("QUIT")
			d.expect("221")
			d.conn.Close()
		}
		eventually(t, "every connection closed on the server", func() bool { return open() == 0 })
		return (float64(after) - float64(before)) / n
	}
	// Each server once before measuring: the certificate is issued, and
	// what a first connection sets up once is there.
	perConn(ours, srv.TestConns)
	perConn(ln.Addr().String(), ln.count)
	base := perConn(ln.Addr().String(), ln.count)
	got := perConn(ours, srv.TestConns)
	extra := got - base
	t.Logf("heap per idle STARTTLS connection (server and client): bare go-smtp %.0f B, ours %.0f B, ours beyond go-smtp %.0f B", base, got, extra)
	if extra > 2*1024 {
		t.Errorf("an idle STARTTLS connection costs %.0f B of heap beyond go-smtp's own; want at most 2 KiB", extra)
	}
}

// nopBackend is a go-smtp backend whose sessions take nothing.
type nopBackend struct{}

func (nopBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return nopSession{}, nil }

type nopSession struct{}

func (nopSession) Mail(string, *smtp.MailOptions) error { return nil }
func (nopSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (nopSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (nopSession) Reset()        {}
func (nopSession) Logout() error { return nil }

// openConnListener counts its connections that are not closed yet.
type openConnListener struct {
	net.Listener
	open atomic.Int64
}

func (l *openConnListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &openConn{Conn: c, l: l}, nil
}

func (l *openConnListener) count() int { return int(l.open.Load()) }

type openConn struct {
	net.Conn
	l    *openConnListener
	once sync.Once
}

func (c *openConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}
