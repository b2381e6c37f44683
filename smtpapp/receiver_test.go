package smtpapp_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// receiver is a real go-smtp server on loopback that plays the next hop
// (a customer's mail server, an MX): it records what it receives and can
// be told to misbehave.
type receiver struct {
	t    *testing.T
	srv  *smtp.Server
	ln   net.Listener
	addr string

	// rcptErr and dataErr decide replies; nil means accept.
	rcptErr func(rcpt string) error
	dataErr func() error
	// refuse454 answers STARTTLS with 454 instead of starting TLS.
	refuse454 bool

	conns atomic.Int32
	bdat  atomic.Int32 // plaintext reads with a BDAT command
	// pipelined counts the plaintext reads that hold a transaction from
	// MAIL to BDAT.
	pipelined atomic.Int32

	noChunking bool

	mu   sync.Mutex
	msgs []receivedMsg
}

type receivedMsg struct {
	remote string // the client's address, host:port
	from   string
	rcpts  []string
	data   []byte
	tls    bool
	helo   string

	requireTLS bool // MAIL FROM had REQUIRETLS
}

type receiverOpts struct {
	tls       *tls.Config // nil: STARTTLS not offered
	addr      string      // default 127.0.0.1:0
	refuse454 bool
	// requireTLS offers REQUIRETLS (go-smtp does so over TLS only).
	requireTLS bool
	// noChunking takes CHUNKING out of the EHLO reply (plaintext only).
	noChunking bool
}

func startReceiver(t *testing.T, o receiverOpts) *receiver {
	t.Helper()
	r := &receiver{t: t, refuse454: o.refuse454, noChunking: o.noChunking}
	r.srv = smtp.NewServer(r)
	r.srv.Domain = "receiver.test"
	r.srv.TLSConfig = o.tls
	r.srv.EnableDSN = true
	r.srv.EnableSMTPUTF8 = true
	r.srv.EnableREQUIRETLS = o.requireTLS
	r.srv.ErrorLog = nopLogger{}
	addr := o.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("receiver listen %s: %v", addr, err)
	}
	r.ln, r.addr = ln, ln.Addr().String()
	go r.srv.Serve(&countingListener{Listener: ln, r: r})
	t.Cleanup(func() { r.srv.Close() })
	return r
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

// countingListener counts connections and, for refuse454, answers the
// STARTTLS command itself.
type countingListener struct {
	net.Listener
	r *receiver
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.r.conns.Add(1)
	if l.r.refuse454 {
		return &refuseSTARTTLS{Conn: c, br: bufio.NewReader(c)}, nil
	}
	return &bdatSpy{Conn: c, r: l.r}, nil
}

// refuseSTARTTLS hides STARTTLS commands from go-smtp and answers 454.
type refuseSTARTTLS struct {
	net.Conn
	br  *bufio.Reader
	buf []byte
}

func (c *refuseSTARTTLS) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		line, err := c.br.ReadBytes('\n')
		if err != nil {
			return 0, err
		}
		if strings.EqualFold(strings.TrimSpace(string(line)), "STARTTLS") {
			if _, err := io.WriteString(c.Conn, "454 4.7.0 TLS not available due to temporary reason\r\n"); err != nil {
				return 0, err
			}
			continue
		}
		c.buf = line
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (r *receiver) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &receiverSession{r: r, tls: isTLS, helo: c.Hostname(), remote: c.Conn().RemoteAddr().String()}, nil
}

type receiverSession struct {
	r      *receiver
	tls    bool
	helo   string
	remote string
	from   string
	rcpts  []string

	requireTLS bool
}

func (s *receiverSession) Reset()        { s.from, s.requireTLS, s.rcpts = "", false, nil }
func (s *receiverSession) Logout() error { return nil }
func (s *receiverSession) Mail(from string, opts *smtp.MailOptions) error {
	s.from, s.requireTLS = from, opts != nil && opts.RequireTLS
	return nil
}
func (s *receiverSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.r.rcptErr != nil {
		if err := s.r.rcptErr(to); err != nil {
			return err
		}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *receiverSession) Data(rd io.Reader) error {
	data, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	if s.r.dataErr != nil {
		if err := s.r.dataErr(); err != nil {
			return err
		}
	}
	s.r.mu.Lock()
	s.r.msgs = append(s.r.msgs, receivedMsg{from: s.from, rcpts: s.rcpts, data: data, tls: s.tls, helo: s.helo, requireTLS: s.requireTLS, remote: s.remote})
	s.r.mu.Unlock()
	return nil
}

func (r *receiver) messages() []receivedMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedMsg(nil), r.msgs...)
}

// waitMessages waits until the receiver has n messages and returns them.
func (r *receiver) waitMessages(n int) []receivedMsg {
	r.t.Helper()
	eventually(r.t, "messages at the receiver", func() bool { return len(r.messages()) >= n })
	msgs := r.messages()
	if len(msgs) != n {
		r.t.Fatalf("receiver got %d messages, want %d", len(msgs), n)
	}
	return msgs
}

// header returns a header field of a received message.
func (m receivedMsg) header(name string) string {
	msg, err := mail.ReadMessage(strings.NewReader(string(m.data)))
	if err != nil {
		return ""
	}
	return msg.Header.Get(name)
}

// testCertificate makes a CA and a server certificate for names, and
// returns the server's tls.Config and a pool trusting the CA.
func testCertificate(t *testing.T, names ...string) (*tls.Config, *x509.CertPool) {
	t.Helper()
	cfg, pool, _ := testCertificateWithCA(t, names...)
	return cfg, pool
}

// testCertificateWithCA is testCertificate that also returns the CA
// certificate as PEM (for ca_file options).
func testCertificateWithCA(t *testing.T, names ...string) (*tls.Config, *x509.CertPool, []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "receiver test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	leafCert, _ := x509.ParseCertificate(der)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leafCert}}}, pool, caPEM
}

// bdatSpy counts the reads with a BDAT command, and those with a whole
// pipelined transaction (a client writes it in one go, so on loopback a
// small one arrives in one read).
type bdatSpy struct {
	net.Conn
	r *receiver
}

// Write drops CHUNKING from the EHLO reply for noChunking (go-smtp always
// offers it; it writes the reply in one go).
func (c *bdatSpy) Write(b []byte) (int, error) {
	if c.r.noChunking && bytes.Contains(b, []byte("250-CHUNKING\r\n")) {
		if _, err := c.Conn.Write(bytes.Replace(b, []byte("250-CHUNKING\r\n"), nil, 1)); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *bdatSpy) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	got := b[:n]
	if bytes.HasPrefix(got, []byte("BDAT ")) || bytes.Contains(got, []byte("\r\nBDAT ")) {
		c.r.bdat.Add(1)
	}
	if bytes.HasPrefix(got, []byte("MAIL FROM:")) && bytes.Contains(got, []byte("\r\nBDAT ")) {
		c.r.pipelined.Add(1)
	}
	return n, err
}
