package tlsupgrade

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestPipelinedCommandsMatchGoSMTP: the MAIL and RCPT lines that
// SendPipelined writes are byte for byte those go-smtp's Client writes
// to the same server, for every option the delivery client uses, and an
// option go-smtp refuses is refused too.
func TestPipelinedCommandsMatchGoSMTP(t *testing.T) {
	checkLeaks(t)
	auth := "a+b=c@x.test"
	mails := []*smtp.MailOptions{
		nil,
		{Size: 12345},
		{Size: 1, Body: smtp.Body7Bit, UTF8: true, RequireTLS: true},
		{Return: smtp.DSNReturnHeaders, EnvelopeID: "id+1=2 x"},
		{Return: smtp.DSNReturnFull},
		{Auth: &auth},
		{EnvelopeID: "bad\x01"},
		{Return: "BOGUS"},
	}
	rcpts := []*smtp.RcptOptions{
		nil,
		{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}},
		{Notify: []smtp.DSNNotify{smtp.DSNNotifyNever}},
		{Notify: []smtp.DSNNotify{smtp.DSNNotifyNever, smtp.DSNNotifySuccess}},
		{Notify: []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifySuccess}},
		{OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "o+r=c@x.test"},
		{OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "ü@x.test"},
		{OriginalRecipientType: smtp.DSNAddressTypeUTF8, OriginalRecipient: "jürgen +=@bücher.test"},
		{OriginalRecipientType: "x-other", OriginalRecipient: "a@x.test"},
	}
	for _, exts := range []string{
		"250-8BITMIME\r\n250-SIZE 1000000\r\n250-DSN\r\n250-SMTPUTF8\r\n250-REQUIRETLS\r\n250-AUTH PLAIN\r\n250 PIPELINING\r\n",
		"250-DSN\r\n250 CHUNKING\r\n",
		"250 HELP\r\n",
	} {
		ss, c := dialExtensions(t, exts)
		ss.seen()
		compare := func(what string, ours []byte, oursErr, theirsErr error) {
			t.Helper()
			got := ss.seen()
			if theirsErr != nil || oursErr != nil {
				if (theirsErr == nil) != (oursErr == nil) {
					t.Errorf("%s: go-smtp %v, ours %v (%q)", what, theirsErr, oursErr, ours)
				}
				return
			}
			if len(got) != 1 || string(ours) != got[0]+"\r\n" {
				t.Errorf("%s:\n go-smtp %q\n ours    %q", what, got, ours)
			}
		}
		for i, mo := range mails {
			ours, oerr := c.appendMail(nil, "s@x.test", mo)
			compare(fmt.Sprintf("%q MAIL %d", exts, i), ours, oerr, c.Client.Mail("s@x.test", mo))
		}
		for i, ro := range rcpts {
			ours, oerr := c.appendRcpt(nil, "r@x.test", ro)
			compare(fmt.Sprintf("%q RCPT %d", exts, i), ours, oerr, c.Client.Rcpt("r@x.test", ro))
		}
		c.Close()
	}
}

// dialExtensions connects to a script server whose EHLO reply offers
// exts (its "250" lines) and that answers 250 to everything else.
func dialExtensions(t *testing.T, exts string) (*scriptServer, *Conn) {
	t.Helper()
	ss := startScript(t, "220 mx.test ESMTP\r\n", func(_ int, line string) string {
		if strings.HasPrefix(line, "EHLO") {
			return "250-mx.test\r\n" + exts
		}
		return "250 2.0.0 ok\r\n"
	})
	c, err := Dial(testContext(t), ss.addr, Options{LocalName: localName, ServerName: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	return ss, c
}

// judge is a go-smtp backend that refuses the sender "refused@", the
// recipients "bad@" and any message containing "REFUSE", and counts the
// reads that hold a whole pipelined transaction (MAIL to BDAT).
type judge struct {
	mu        sync.Mutex
	delivered []string
	pipelined int
}

func (j *judge) NewSession(*smtp.Conn) (smtp.Session, error) { return &judgeSession{j: j}, nil }

type judgeSession struct {
	j    *judge
	from string
	to   []string
}

func (s *judgeSession) Reset()        { s.from, s.to = "", nil }
func (s *judgeSession) Logout() error { return nil }

func (s *judgeSession) Mail(from string, _ *smtp.MailOptions) error {
	if strings.HasPrefix(from, "refused@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}
	}
	s.from = from
	return nil
}

func (s *judgeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "bad@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *judgeSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte("REFUSE")) {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content refused"}
	}
	s.j.mu.Lock()
	defer s.j.mu.Unlock()
	s.j.delivered = append(s.j.delivered, fmt.Sprintf("%s>%s:%s", s.from, strings.Join(s.to, ","), b))
	return nil
}

type countingListener struct {
	net.Listener
	j *judge
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return countingConn{c, l.j}, err
}

type countingConn struct {
	net.Conn
	j *judge
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if bytes.HasPrefix(b[:n], []byte("MAIL FROM:")) && bytes.Contains(b[:n], []byte("\r\nBDAT ")) {
		c.j.mu.Lock()
		c.j.pipelined++
		c.j.mu.Unlock()
	}
	return n, err
}

// TestSendPipelined: against a real go-smtp server, one transaction is
// one write (the server reads MAIL to the end of a small body at once);
// a refused sender, a refused recipient among good ones, all recipients
// refused and refused content each get their reply, and the connection
// carries the next transaction after each; a message of several chunks
// arrives byte for byte.
func TestSendPipelined(t *testing.T) {
	checkLeaks(t)
	j := &judge{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(j)
	srv.Domain = "mx.test"
	srv.AllowInsecureAuth = true
	srv.EnableDSN = true
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(countingListener{l, j}) }()
	t.Cleanup(func() { srv.Close(); l.Close(); <-done })

	c, err := Dial(testContext(t), l.Addr().String(), Options{LocalName: localName, ServerName: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.CanPipeline() {
		t.Fatal("go-smtp offers PIPELINING and CHUNKING")
	}
	send := func(from string, body string, to ...string) *TxResult {
		t.Helper()
		res, err := c.SendPipelined(from, &smtp.MailOptions{Size: int64(len(body))}, to, nil, strings.NewReader(body))
		if err != nil {
			t.Fatalf("connection failed: %v", err)
		}
		if res.Mail != nil || res.DataErr != nil || res.Data == nil {
			if err := c.Client.Reset(); err != nil {
				t.Fatalf("RSET: %v", err)
			}
		}
		return res
	}
	code := func(err error) int {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se.Code
		}
		return 0
	}

	res := send("a@x.test", "Subject: one\r\n\r\nhello\r\n.\r\n", "b@x.test")
	if res.Data == nil || res.Data.Code != 250 || res.Rcpts[0] != nil {
		t.Fatalf("first: %+v", res)
	}
	res = send("refused@x.test", "Subject: two\r\n\r\nx\r\n", "b@x.test")
	if code(res.Mail) != 550 || res.Data != nil {
		t.Fatalf("refused sender: %+v", res)
	}
	res = send("a@x.test", "Subject: three\r\n\r\nx\r\n", "bad@x.test", "c@x.test")
	if code(res.Rcpts[0]) != 550 || res.Rcpts[1] != nil || res.Data == nil || res.Data.Code != 250 {
		t.Fatalf("one refused recipient: %+v", res)
	}
	res = send("a@x.test", "Subject: four\r\n\r\nx\r\n", "bad@x.test")
	if code(res.Rcpts[0]) != 550 || res.Data != nil || res.DataErr != nil {
		t.Fatalf("no recipient: %+v", res)
	}
	res = send("a@x.test", "Subject: five\r\n\r\nREFUSE\r\n", "b@x.test")
	if code(res.DataErr) != 554 || res.Data != nil {
		t.Fatalf("refused content: %+v", res)
	}
	big := "Subject: big\r\n\r\n" + strings.Repeat(".a line that DATA would dot-stuff\r\n", 70_000) // 2.4 MiB
	res = send("a@x.test", big, "d@x.test")
	if res.Data == nil || res.Data.Code != 250 {
		t.Fatalf("big: %+v", res)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	want := []string{
		"a@x.test>b@x.test:Subject: one\r\n\r\nhello\r\n.\r\n",
		"a@x.test>c@x.test:Subject: three\r\n\r\nx\r\n",
		"a@x.test>d@x.test:" + big,
	}
	if len(j.delivered) != len(want) {
		t.Fatalf("%d delivered, want %d", len(j.delivered), len(want))
	}
	for i := range want {
		if j.delivered[i] != want[i] {
			t.Errorf("message %d: %d bytes, want %d", i, len(j.delivered[i]), len(want[i]))
		}
	}
	if j.pipelined < 5 {
		t.Errorf("%d transactions arrived in one read, want the 5 small ones", j.pipelined)
	}
}

// TestSendPipelinedNeedsBoth: a server that offers PIPELINING without
// CHUNKING (or the other way round) gets nothing from SendPipelined.
func TestSendPipelinedNeedsBoth(t *testing.T) {
	checkLeaks(t)
	for _, exts := range []string{"250 PIPELINING\r\n", "250 CHUNKING\r\n"} {
		ss, c := dialExtensions(t, exts)
		ss.seen()
		if _, err := c.SendPipelined("a@x.test", nil, []string{"b@x.test"}, nil, strings.NewReader("x\r\n")); !errors.Is(err, ErrNoPipelining) {
			t.Errorf("%q: %v, want ErrNoPipelining", exts, err)
		}
		if err := c.Client.Noop(); err != nil {
			t.Fatal(err)
		}
		if got := ss.seen(); len(got) != 1 || got[0] != "NOOP" {
			t.Errorf("%q: the server saw %q, want only NOOP", exts, got)
		}
		c.Close()
	}
}
