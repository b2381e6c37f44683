package tlsupgrade

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/textproto"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// checkLeaks fails the test if it ends with more goroutines than it started
// with. Call it first, so that its cleanup runs after the others.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}

// testCA is a certificate authority made up for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var serial atomic.Int64

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: "tlsupgrade test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes a server certificate for names, valid from notBefore to
// notAfter, signed by ca (self-signed when ca is nil).
func (ca *testCA) issue(t testing.TB, names []string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// valid issues a certificate valid now.
func (ca *testCA) valid(t testing.TB, names ...string) tls.Certificate {
	return ca.issue(t, names, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

func serverTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// backend is a go-smtp backend that keeps what it sees.
type backend struct {
	mu       sync.Mutex
	sessions []sessionInfo
	messages []message
}

// sessionInfo is one go-smtp session: they start at EHLO, and again after
// STARTTLS.
type sessionInfo struct {
	Hostname string
	TLS      bool
}

type message struct {
	From string
	To   []string
	Data string
	TLS  bool
}

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sessions = append(b.sessions, sessionInfo{Hostname: c.Hostname(), TLS: isTLS})
	return &session{b: b, tls: isTLS}, nil
}

func (b *backend) snapshot() ([]sessionInfo, []message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]sessionInfo(nil), b.sessions...), append([]message(nil), b.messages...)
}

type session struct {
	b   *backend
	tls bool
	msg message
}

func (s *session) Reset()        { s.msg = message{} }
func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.msg = message{From: from, TLS: s.tls}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.To = append(s.msg.To, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.msg.Data = string(data)
	s.b.mu.Lock()
	s.b.messages = append(s.b.messages, s.msg)
	s.b.mu.Unlock()
	return nil
}

// testServer is a go-smtp server on 127.0.0.1 that counts its connections
// and the STARTTLS commands it receives, and can answer STARTTLS with 454
// itself.
type testServer struct {
	addr     string
	be       *backend
	accepts  atomic.Int32
	startTLS atomic.Int32
	bdat     atomic.Int32 // reads that start with a BDAT command
	refuse   bool
}

// startServer starts a go-smtp server; tlsConfig nil means no STARTTLS.
// configure, if given, adjusts the server before it starts.
func startServer(t testing.TB, tlsConfig *tls.Config, refuseSTARTTLS bool, configure ...func(*smtp.Server)) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: l.Addr().String(), be: &backend{}, refuse: refuseSTARTTLS}
	s := smtp.NewServer(ts.be)
	s.Domain = "mx.test"
	s.TLSConfig = tlsConfig
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	for _, f := range configure {
		f(s)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(&spyListener{Listener: l, ts: ts})
	}()
	t.Cleanup(func() {
		s.Close()
		// Close misses a listener that Serve has not registered yet (a
		// test that never connects can end that early).
		l.Close()
		<-done
	})
	return ts
}

type spyListener struct {
	net.Listener
	ts *testServer
}

func (l *spyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.ts.accepts.Add(1)
	return &spyConn{Conn: c, ts: l.ts}, nil
}

// spyConn sees the bytes the client sends before the server does. A client
// writes a command line in one go, so on loopback STARTTLS arrives as one
// read of its own.
type spyConn struct {
	net.Conn
	ts *testServer
}

func (c *spyConn) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if n > 0 && bytes.HasPrefix(b[:n], []byte("BDAT ")) {
			c.ts.bdat.Add(1)
		}
		if n > 0 && bytes.EqualFold(b[:n], []byte("STARTTLS\r\n")) {
			c.ts.startTLS.Add(1)
			if c.ts.refuse && err == nil {
				if _, err := io.WriteString(c.Conn, "454 4.7.0 TLS not available due to temporary reason\r\n"); err != nil {
					return 0, err
				}
				continue
			}
		}
		return n, err
	}
}

// scriptServer is a hand-driven SMTP peer for dialogs go-smtp's server will
// not produce. reply gets the connection number (from 1) and each line the
// client sends, and returns the raw bytes to answer, or "" for no answer. The
// connection ends after QUIT or when reply returns "close".
type scriptServer struct {
	addr    string
	accepts atomic.Int32
	lines   chan string
}

func startScript(t testing.TB, greeting string, reply func(n int, line string) string) *scriptServer {
	t.Helper()
	ss := &scriptServer{lines: make(chan string, 100)}
	ss.addr = serveLoopback(t, func(_ *connGroup, c net.Conn) {
		defer c.Close()
		ss.serve(c, int(ss.accepts.Add(1)), greeting, reply)
	})
	return ss
}

// connGroup is the connections and goroutines of a loopback test server.
type connGroup struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

// track makes c closed when the test ends.
func (g *connGroup) track(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.conns = append(g.conns, c)
}

// serveLoopback listens on 127.0.0.1 and runs handle in a goroutine of its
// own for each connection until the test ends; then it closes the listener
// and every tracked connection (accepted ones are tracked) and waits for
// the goroutines, including those that handle starts with g.wg.Go. It
// returns the address.
func serveLoopback(t testing.TB, handle func(g *connGroup, c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &connGroup{}
	g.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			g.track(c)
			g.wg.Go(func() { handle(g, c) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		g.mu.Lock()
		for _, c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return l.Addr().String()
}

func (ss *scriptServer) serve(c net.Conn, n int, greeting string, reply func(n int, line string) string) {
	if greeting == "" { // a server that never speaks
		io.Copy(io.Discard, c)
		return
	}
	if _, err := io.WriteString(c, greeting); err != nil {
		return
	}
	tp := textproto.NewReader(bufio.NewReader(c))
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		select {
		case ss.lines <- line:
		default:
		}
		if strings.EqualFold(line, "QUIT") {
			io.WriteString(c, "221 2.0.0 bye\r\n")
			return
		}
		out := reply(n, line)
		if out == "close" {
			return
		}
		if _, err := io.WriteString(c, out); err != nil {
			return
		}
	}
}

// seen returns the lines the script server has received so far.
func (ss *scriptServer) seen() []string {
	var lines []string
	for {
		select {
		case l := <-ss.lines:
			lines = append(lines, l)
		default:
			return lines
		}
	}
}

// freeAddr returns an address nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// wantDelivered checks that the server got exactly one message, over TLS or
// not, on conns connections.
func (ts *testServer) wantDelivered(t testing.TB, overTLS bool, conns int) {
	t.Helper()
	if _, msgs := ts.be.snapshot(); len(msgs) != 1 || msgs[0].TLS != overTLS {
		t.Errorf("messages = %+v, want one with TLS %v", msgs, overTLS)
	}
	if n := int(ts.accepts.Load()); n != conns {
		t.Errorf("%d connections, want %d", n, conns)
	}
}

// wantNothing checks that the server got no message on conns connections.
func (ts *testServer) wantNothing(t testing.TB, conns int) {
	t.Helper()
	if _, msgs := ts.be.snapshot(); len(msgs) != 0 {
		t.Errorf("messages = %+v, want none", msgs)
	}
	if n := int(ts.accepts.Load()); n != conns {
		t.Errorf("%d connections, want %d", n, conns)
	}
}

// deliver sends one message on c and closes it.
func deliver(t testing.TB, c *Conn) {
	t.Helper()
	if err := c.Client.Mail("sender@src.test", nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Client.Rcpt("rcpt@dst.test", nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	w, err := c.Client.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := io.WriteString(w, "Subject: test\r\n\r\nhello\r\n"); err != nil {
		t.Fatalf("body: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("end of DATA: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// dialError asserts that err is a *DialError at stage.
func dialError(t testing.TB, err error, stage string) *DialError {
	t.Helper()
	if err == nil {
		t.Fatalf("Dial succeeded, want an error at stage %q", stage)
	}
	de, ok := errors.AsType[*DialError](err)
	if !ok {
		t.Fatalf("error %v (%T) is not a *DialError", err, err)
	}
	if de.Stage != stage {
		t.Fatalf("stage = %q, want %q (error: %v)", de.Stage, stage, err)
	}
	return de
}
