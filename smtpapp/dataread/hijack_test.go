package dataread

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// backend is a go-smtp backend whose sessions read DATA with Hijack and a
// Reader, and BDAT with a chunk checker, and keep what they read.
type backend struct {
	mu       sync.Mutex
	opt      Options
	bodies   []string
	errs     []error
	types    []reflect.Type // of the reader go-smtp passed to Data
	hijacked []bool

	// inspect, if set, is called after a hijack instead of finish, which
	// it must call.
	inspect func(br *bufio.Reader, finish func())
}

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) { return session{b}, nil }

func (b *backend) setOptions(opt Options) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opt = opt
}

// last returns what the last Data call read.
func (b *backend) last() (body string, err error, hijacked bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.bodies) == 0 {
		return "", errors.New("no message"), false
	}
	i := len(b.bodies) - 1
	return b.bodies[i], b.errs[i], b.hijacked[i]
}

type session struct{ b *backend }

func (session) Reset()                               {}
func (session) Logout() error                        { return nil }
func (session) Mail(string, *smtp.MailOptions) error { return nil }
func (session) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s session) Data(r io.Reader) (err error) {
	s.b.mu.Lock()
	opt := s.b.opt
	s.b.mu.Unlock()

	br, finish, ok := Hijack(r)
	var rd *Reader
	if ok {
		rd = NewReader(br, opt)
	} else {
		rd = NewChunkChecker(r, opt)
	}
	body, err := io.ReadAll(rd)
	if ok {
		if err == nil {
			err = rd.Drain() // a no-op after ReadAll: the pattern for early returns
		}
		if s.b.inspect != nil {
			s.b.inspect(br, finish)
		} else {
			finish()
		}
	}

	s.b.mu.Lock()
	s.b.bodies = append(s.b.bodies, string(body))
	s.b.errs = append(s.b.errs, err)
	s.b.types = append(s.b.types, reflect.TypeOf(r))
	s.b.hijacked = append(s.b.hijacked, ok)
	s.b.mu.Unlock()

	var e *Error
	switch {
	case errors.As(err, &e) && e.Kind == ErrTooLarge:
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "too large"}
	case errors.As(err, &e):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "bad content"}
	}
	return err
}

// startServer runs a go-smtp server on 127.0.0.1 and returns its address.
func startServer(tb testing.TB, be *backend, configure ...func(*smtp.Server)) string {
	tb.Helper()
	s := smtp.NewServer(be)
	for _, f := range configure {
		f(s)
	}
	s.Domain = "test.example"
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	s.ErrorLog = testLogger{tb}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(l)
	}()
	tb.Cleanup(func() {
		s.Close()
		<-done
	})
	return l.Addr().String()
}

type testLogger struct{ tb testing.TB }

func (l testLogger) Printf(format string, v ...any) { l.tb.Logf(format, v...) }
func (l testLogger) Println(v ...any)               { l.tb.Log(v...) }

// client speaks raw SMTP.
type client struct {
	tb   testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(tb testing.TB, addr string) *client {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(time.Minute))
	c := &client{tb: tb, conn: conn, r: bufio.NewReader(conn)}
	c.expect("220")
	c.send("EHLO client.example")
	c.expect("250")
	return c
}

func (c *client) send(line string) {
	c.tb.Helper()
	c.write(line + "\r\n")
}

func (c *client) write(s string) {
	c.tb.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.tb.Fatal(err)
	}
}

// expect reads a reply and fails unless its code is code.
func (c *client) expect(code string) string {
	c.tb.Helper()
	var reply string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.tb.Fatalf("reading a reply (want %s): %v", code, err)
		}
		reply += line
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	if !strings.HasPrefix(reply, code) {
		c.tb.Fatalf("reply %q, want %s", reply, code)
	}
	return reply
}

// data sends DATA, then content, and expects reply.
func (c *client) data(content, reply string) {
	c.tb.Helper()
	c.send("DATA")
	c.expect("354")
	c.write(content)
	c.expect(reply)
}

// bdat sends a BDAT chunk and expects reply.
func (c *client) bdat(chunk string, last bool, reply string) {
	c.tb.Helper()
	cmd := fmt.Sprintf("BDAT %d", len(chunk))
	if last {
		cmd += " LAST"
	}
	c.send(cmd)
	c.write(chunk)
	c.expect(reply)
}

func (c *client) envelope() {
	c.tb.Helper()
	c.send("MAIL FROM:<a@client.example>")
	c.expect("250")
	c.send("RCPT TO:<b@test.example>")
	c.expect("250")
}

// TestHijackServer drives one connection to a real go-smtp server through
// every DATA case, each sent in one write with the next command after it,
// and checks the reply, the body and that the connection stays in sync.
func TestHijackServer(t *testing.T) {
	be := &backend{}
	c := dial(t, startServer(t, be))
	for _, tc := range dataCases {
		if tc.kind == io.ErrUnexpectedEOF || tc.left != "" {
			continue
		}
		name := fmt.Sprintf("%q %+v", tc.in, tc.opt)
		be.setOptions(tc.opt)
		c.envelope()
		reply := "550 5.6.0"
		switch tc.kind {
		case nil:
			reply = "250"
		case ErrTooLarge:
			reply = "552 5.3.4"
		}
		c.data(tc.in+"RSET\r\n", reply)
		c.expect("250") // RSET: still in sync
		body, err, hijacked := be.last()
		switch {
		case !hijacked:
			t.Fatalf("%s: Hijack failed on %v", name, be.types[len(be.types)-1])
		case tc.kind == nil && (err != nil || body != tc.out):
			t.Errorf("%s: the server read %q, %v, want %q", name, body, err, tc.out)
		case tc.kind != nil && !sameErr(err, &Error{tc.kind, tc.at}):
			t.Errorf("%s: the server read error %v, want %v", name, err, &Error{tc.kind, tc.at})
		}

		// A second message on the same connection.
		be.setOptions(Options{})
		c.envelope()
		c.data("second\r\n..\r\n.\r\n", "250")
		if body, err, _ := be.last(); err != nil || body != "second\r\n.\r\n" {
			t.Fatalf("%s: the next message read as %q, %v", name, body, err)
		}
	}
	c.send("QUIT")
	c.expect("221")
}

// TestHijackServerLimits checks that go-smtp's own size limit does not
// disturb a hijacked read (we read past it, and go-smtp reads nothing after
// finish) and that our limits keep the connection in sync. go-smtp's line
// limit (2000 by default) is not tested: a line over it breaks the
// connection, whoever reads.
func TestHijackServerLimits(t *testing.T) {
	be := &backend{}
	c := dial(t, startServer(t, be, func(s *smtp.Server) { s.MaxMessageBytes = 100 }))
	long := strings.Repeat("x", 1500) + "\r\n.\r\n"
	for _, tc := range []struct {
		opt   Options
		reply string
		err   error
	}{
		{Options{}, "250", nil},
		{Options{MaxLineLength: 1000}, "550", ErrLineTooLong},
		{Options{MaxSize: 1000}, "552", ErrTooLarge},
	} {
		be.setOptions(tc.opt)
		c.envelope()
		c.data(long, tc.reply)
		c.send("NOOP")
		c.expect("250")
		if body, err, _ := be.last(); !errors.Is(err, tc.err) || err == nil && body != long[:1502] {
			t.Errorf("%+v: read %d bytes, error %v, want %v", tc.opt, len(body), err, tc.err)
		}
	}
}

// TestHijackServerBDAT checks the chunk checker on go-smtp's BDAT path,
// where Hijack must refuse the io.Pipe it is given.
func TestHijackServerBDAT(t *testing.T) {
	be := &backend{}
	c := dial(t, startServer(t, be))

	c.envelope()
	c.bdat("a\r", false, "250")
	c.bdat("\nb\r\n", true, "250")
	if body, err, hijacked := be.last(); hijacked || err != nil || body != "a\r\nb\r\n" {
		t.Errorf("BDAT read %q, %v, hijacked %v", body, err, hijacked)
	}

	for _, chunk := range []string{"a\r", "a\nb\r\n", "a\x00\r\n"} {
		c.envelope()
		c.bdat(chunk, true, "550 5.6.0")
		c.send("RSET")
		c.expect("250")
	}

	be.setOptions(Options{Normalize: true})
	c.envelope()
	c.bdat("a\nb", false, "250")
	c.bdat("\r", true, "250")
	if body, err, _ := be.last(); err != nil || body != "a\r\nb\r\n" {
		t.Errorf("normalized BDAT read %q, %v", body, err)
	}
}

// A type that looks like go-smtp's dataReader but does not behave like it.
type looksLikeDataReader struct {
	r       *bufio.Reader
	state   int
	limited bool
	n       int64
}

func (l *looksLikeDataReader) Read(p []byte) (int, error) { return l.r.Read(p) }

type otherLayout struct {
	state   int
	r       *bufio.Reader
	limited bool
	n       int64
}

func (o *otherLayout) Read(p []byte) (int, error) { return 0, io.EOF }

func TestHijackRefuses(t *testing.T) {
	for _, r := range []io.Reader{nil, strings.NewReader(".\r\n"), (*io.PipeReader)(nil), &looksLikeDataReader{}} {
		if br, finish, ok := Hijack(r); ok || br != nil || finish != nil {
			t.Errorf("Hijack(%T) = %v, %v, %v", r, br, finish != nil, ok)
		}
	}
	if checkLayout(reflect.TypeFor[*looksLikeDataReader]()) {
		t.Error("checkLayout accepts a reader without go-smtp's states")
	}
	if checkLayout(reflect.TypeFor[*otherLayout]()) {
		t.Error("checkLayout accepts other fields")
	}
}

// goSMTPDataReader returns the type of go-smtp's dataReader, learnt from a
// real server.
func goSMTPDataReader(tb testing.TB) reflect.Type {
	tb.Helper()
	be := &backend{}
	c := dial(tb, startServer(tb, be))
	c.envelope()
	c.data(".\r\n", "250")
	c.send("QUIT")
	c.expect("221")
	be.mu.Lock()
	defer be.mu.Unlock()
	return be.types[0]
}

func TestHijackLayout(t *testing.T) {
	typ := goSMTPDataReader(t)
	if !checkLayout(typ) {
		t.Fatalf("go-smtp's %v does not have the layout Hijack expects", typ)
	}
	// A dataReader that has been read is refused.
	v := reflect.New(typ.Elem())
	bp, _ := fields(v)
	*bp = bufio.NewReader(strings.NewReader("ab\r\n.\r\n"))
	r := v.Interface().(io.Reader)
	r.Read(make([]byte, 1))
	if _, _, ok := Hijack(r); ok {
		t.Error("Hijack takes a dataReader that has been read")
	}
}
