package milter

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/d--j/go-milter"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// The actions no milter from Debian can be made to take on demand (header
// changes, quarantine, discard, a reply of its own at RCPT) are tried
// against a milter written with go-milter's server side, over a real Unix
// socket: a scripted peer, not a mock of our client.

// scripted is a milter that answers by the envelope and the Subject, and
// records what it was told.
type scripted struct {
	milter.NoOpMilter
	rec     *record
	headers []string // of this message
}

// record is what the scripted milter saw, for the test to read.
type record struct {
	mu      sync.Mutex
	macros  map[string]string // name@stage -> value
	conn    string            // hostname family addr
	headers []string          // name: value as received
	body    bytes.Buffer
	chunks  []int
	release chan struct{} // a stalled end of message waits for it
	ended   int           // connections that ended (Cleanup)
	data    int           // DATA commands
}

func (r *record) macro(m milter.Modifier, stage string, names ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range names {
		if v, ok := m.GetEx(n); ok {
			r.macros[n+"@"+stage] = v
		}
	}
}

func (s *scripted) Connect(host, family string, port uint16, addr string, m milter.Modifier) (*milter.Response, error) {
	s.rec.macro(m, "connect", "j", "{daemon_name}", "{client_addr}", "{client_name}")
	s.rec.mu.Lock()
	s.rec.conn = host + " " + family + " " + addr
	s.rec.mu.Unlock()
	return milter.RespContinue, nil
}

func (s *scripted) MailFrom(from, _ string, m milter.Modifier) (*milter.Response, error) {
	s.rec.macro(m, "mail", "{mail_addr}", "{auth_authen}")
	switch from {
	case "discard@sender.test":
		return milter.RespDiscard, nil
	case "refused@sender.test":
		return milter.RejectWithCodeAndReason(554, "5.7.1 we do not take mail from you")
	}
	return milter.RespContinue, nil
}

func (s *scripted) RcptTo(rcpt, _ string, m milter.Modifier) (*milter.Response, error) {
	s.rec.macro(m, "rcpt", "{rcpt_addr}")
	switch rcpt {
	case "unknown@example.test":
		return milter.RejectWithCodeAndReason(550, "5.1.1 no such user here")
	case "later@example.test":
		return milter.RespTempFail, nil
	case "stall@example.test":
		<-s.rec.release
	case "bogus@example.test":
		return milter.RejectWithCodeAndReason(550, "4.1.1 a 5xx code with a 4.x.x enhanced code")
	}
	return milter.RespContinue, nil
}

func (s *scripted) Header(name, value string, _ milter.Modifier) (*milter.Response, error) {
	s.rec.mu.Lock()
	s.rec.headers = append(s.rec.headers, name+": "+value)
	s.rec.mu.Unlock()
	s.headers = append(s.headers, name+": "+value)
	return milter.RespContinue, nil
}

func (s *scripted) BodyChunk(chunk []byte, _ milter.Modifier) (*milter.Response, error) {
	s.rec.mu.Lock()
	s.rec.body.Write(chunk)
	s.rec.chunks = append(s.rec.chunks, len(chunk))
	s.rec.mu.Unlock()
	return milter.RespContinue, nil
}

func (s *scripted) EndOfMessage(m milter.Modifier) (*milter.Response, error) {
	s.rec.macro(m, "eom", "i")
	headers := strings.Join(s.headers, "\n")
	s.headers = nil
	switch {
	case strings.Contains(headers, "hold me"):
		if err := m.Quarantine("looks like spam"); err != nil {
			return nil, err
		}
	case strings.Contains(headers, "stall me"):
		<-s.rec.release
	case strings.Contains(headers, "replace me"):
		if err := m.ReplaceBody(strings.NewReader("The attachment was removed.\nSee the policy.\r\n")); err != nil {
			return nil, err
		}
	case strings.Contains(headers, "refuse me"):
		return milter.RejectWithCodeAndReason(451, "4.7.0 try again in an hour")
	case strings.Contains(headers, "rewrite me"):
		for _, err := range []error{
			m.AddHeader("X-Milter", "seen"),
			m.InsertHeader(0, "X-First", "inserted\n\tfolded"),
			m.ChangeHeader(2, "X-Tag", "two, changed"), // the second of three
			m.ChangeHeader(1, "Subject", ""),           // deleted
			m.ChangeHeader(1, "Subject", "rewritten"),  // and one added
			m.ChangeHeader(1, "X-New", "past the end"), // none yet: added
		} {
			if err != nil {
				return nil, err
			}
		}
	}
	return milter.RespAccept, nil
}

func (s *scripted) Data(milter.Modifier) (*milter.Response, error) {
	s.rec.mu.Lock()
	s.rec.data++
	s.rec.mu.Unlock()
	return milter.RespContinue, nil
}

func (s *scripted) Cleanup(milter.Modifier) {
	s.rec.mu.Lock()
	s.rec.ended++
	s.rec.mu.Unlock()
}

// startScripted serves the scripted milter on a Unix socket in a
// temporary directory and returns its address (unix//path) and record;
// protocol is what it asks for besides SMFIP_NOUNKNOWN.
func startScripted(t *testing.T, protocol milter.OptProtocol) (string, *record) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "milter.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	rec := &record{macros: make(map[string]string), release: make(chan struct{})}
	srv := milter.NewServer(
		milter.WithMilter(func() milter.Milter { return &scripted{rec: rec} }),
		milter.WithActions(milter.OptAddHeader|milter.OptChangeHeader|milter.OptChangeBody|milter.OptQuarantine),
		milter.WithProtocols(milter.OptNoUnknown|protocol),
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		close(rec.release)
		_ = srv.Close()
		<-done
	})
	return "unix/" + path, rec
}

// TestMilterActions: a milter's refusals at MAIL and RCPT (with its own
// replies, one invalid and replaced by ours), its tempfail at the end of
// data, quarantine, discard (held as quarantined) and header changes, and
// what it is told: the connect data, the macros, the header fields and the
// whole body in chunks of at most 64 KiB.
func TestMilterActions(t *testing.T) {
	addr, rec := startScripted(t, 0)
	gw := startGateway(t, map[string]any{"address": addr})
	c := dialSMTP(t, gw.addr)

	c.cmd(250, "", "MAIL FROM:<refused@sender.test>")
	c.cmd(554, "5.7.1 we do not take mail from you", "RCPT TO:<bob@example.test>")
	c.cmd(554, "5.7.1 we do not take mail from you", "RCPT TO:<carol@example.test>")
	c.cmd(250, "", "RSET")

	c.cmd(250, "", "MAIL FROM:<alice@sender.test>")
	c.cmd(550, "5.1.1 no such user here", "RCPT TO:<unknown@example.test>")
	c.cmd(451, "4.7.1", "RCPT TO:<later@example.test>")
	c.cmd(550, "5.7.1 Rejected by policy", "RCPT TO:<bogus@example.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	body := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrs\r\n", 3000) // 198000 bytes
	c.data("From: alice@sender.test\r\n"+
		"Subject: rewrite me\r\n"+
		"X-Tag: one\r\n"+
		"X-Tag: two\r\n"+
		"X-Tag: three\r\n"+
		"X-Folded: a\r\n b\r\n"+
		"\r\n"+body, 250, "")
	msg := string(gw.delivered(t, "bob"))
	head, gotBody, _ := strings.Cut(msg, "\r\n\r\n")
	for _, want := range []string{"X-Milter: seen", "X-First: inserted\r\n\tfolded", "X-Tag: one", "X-Tag: two, changed", "X-Tag: three",
		"Subject: rewritten", "X-New: past the end", "X-Folded: a\r\n b"} {
		if !strings.Contains(head+"\r\n", "\r\n"+want+"\r\n") {
			t.Errorf("delivered header lacks %q:\n%s", want, head)
		}
	}
	for _, gone := range []string{"Subject: rewrite me", "X-Tag: two\r\n"} {
		if strings.Contains(head, gone) {
			t.Errorf("delivered header still has %q:\n%s", gone, head)
		}
	}
	if n := strings.Count(head, "X-Tag:"); n != 3 {
		t.Errorf("%d X-Tag fields, want 3:\n%s", n, head)
	}
	if gotBody != body {
		t.Errorf("delivered body differs (%d bytes, want %d)", len(gotBody), len(body))
	}

	rec.mu.Lock()
	if rec.body.String() != body {
		t.Errorf("milter got a body of %d bytes, want the %d sent", rec.body.Len(), len(body))
	}
	for _, n := range rec.chunks {
		if n > chunkSize {
			t.Errorf("body chunk of %d bytes, more than %d", n, chunkSize)
		}
	}
	if len(rec.chunks) < 4 {
		t.Errorf("body in chunks %v, want it in pieces of 64 KiB", rec.chunks)
	}
	if !strings.Contains(strings.Join(rec.headers, "\n"), "X-Folded: a\n b") {
		t.Errorf("milter got header fields %q, want the folded one with LF", rec.headers)
	}
	for k, want := range map[string]string{
		"{client_addr}@connect": "127.0.0.1", "{client_name}@connect": "[127.0.0.1]", "{daemon_name}@connect": "mx",
		"{mail_addr}@mail": "alice@sender.test", "{rcpt_addr}@rcpt": "bob@example.test",
	} {
		if rec.macros[k] != want {
			t.Errorf("macro %s = %q, want %q", k, rec.macros[k], want)
		}
	}
	if rec.macros["j@connect"] == "" {
		t.Errorf("macro j not sent")
	}
	if id := rec.macros["i@eom"]; !queue.ValidID(id) {
		t.Errorf("macro i (the queue ID) = %q at the end of the message", id)
	}
	if rec.conn != "[127.0.0.1] tcp4 127.0.0.1" {
		t.Errorf("connect %q", rec.conn)
	}
	rec.mu.Unlock()

	c.cmd(250, "", "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "", "RCPT TO:<carol@example.test>")
	c.data("From: alice@sender.test\r\nSubject: refuse me\r\n\r\nbody\r\n", 451, "4.7.0 try again in an hour")

	c.cmd(250, "", "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "", "RCPT TO:<dave@example.test>")
	c.data("From: alice@sender.test\r\nSubject: hold me\r\n", 250, "") // no body at all

	c.cmd(250, "", "MAIL FROM:<discard@sender.test>")
	c.cmd(250, "", "RCPT TO:<erin@example.test>")
	c.data("From: discard@sender.test\r\nSubject: anything\r\n\r\nbody\r\n", 250, "")

	held := map[string]string{}
	for _, snap := range gw.app.RunningQueue().Snapshots() {
		if snap.State == "quarantined" && snap.Quarantine != nil {
			held[snap.Recipients[0].Addr] = snap.Quarantine.Reason
		}
	}
	if held["dave@example.test"] != "quarantined by milter: looks like spam" || held["erin@example.test"] != "discarded by milter" {
		t.Errorf("quarantined: %v", held)
	}
}

// TestMilterStalls: a milter that does not answer at the end of the
// message within the timeout gets the default action (451 4.7.1), and the
// next transaction on the connection works. This milter asks for header
// values with their leading space, and gets them.
func TestMilterStalls(t *testing.T) {
	addr, rec := startScripted(t, milter.OptHeaderLeadingSpace)
	gw := startGateway(t, map[string]any{"address": addr, "timeout": "1s"})
	c := dialSMTP(t, gw.addr)
	c.cmd(250, "", "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.data("From: alice@sender.test\r\nSubject: stall me\r\n\r\nbody\r\n", 451, "4.7.1")
	c.cmd(250, "", "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.data("From: alice@sender.test\r\nSubject: fine\r\n\r\nbody\r\n", 250, "")
	gw.delivered(t, "bob")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if got := rec.headers[len(rec.headers)-1]; got != "Subject:  fine" {
		t.Errorf("milter got %q, want the value with its leading space", got)
	}
}

func TestParseReply(t *testing.T) {
	for in, want := range map[string]string{
		"550 5.7.1 go away":                   "550 5.7.1 go away",
		"451 4.7.0 later":                     "451 4.7.0 later",
		"554 no enhanced code":                "554 5.7.1 no enhanced code",
		"550-5.7.1 first\r\n550 5.7.1 second": "550 5.7.1 first 5.7.1 second",
		"550 4.7.1 wrong class":               "",
		"250 2.0.0 not a refusal":             "",
		"55 short":                            "",
		"550-a\r\n551 b":                      "",
		"550":                                 "550 5.7.1 Rejected by policy",
	} {
		got := ""
		if r := parseReply(in); r != nil {
			got = fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], r.Message)
		}
		if got != want {
			t.Errorf("parseReply(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8891":        "tcp 127.0.0.1:8891",
		"tcp/[::1]:8891":        "tcp [::1]:8891",
		"inet:localhost:8891":   "tcp localhost:8891",
		"unix//run/milter.sock": "unix /run/milter.sock",
		"unix:/run/milter.sock": "unix /run/milter.sock",
		"127.0.0.1":             "error",
		"127.0.0.1:8891-8892":   "error",
		"udp/127.0.0.1:8891":    "error",
		"":                      "error",
	} {
		network, addr, err := parseAddress(in)
		got := network + " " + addr
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("parseAddress(%q) = %q (%v), want %q", in, got, err, want)
		}
	}
}

// TestMilterTransferAborted: the milter's connection is closed at RSET
// and when the client goes away in the middle of DATA (the judge is
// aborted and the session closed with the transaction), and the gateway
// takes the next client's mail.
func TestMilterTransferAborted(t *testing.T) {
	addr, rec := startScripted(t, 0)
	gw := startGateway(t, map[string]any{"address": addr})
	c := dialSMTP(t, gw.addr)
	c.cmd(250, "", "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.cmd(250, "", "RSET")
	testutil.Eventually(t, 10*time.Second, "the milter connection closed at RSET", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.ended == 1
	})
	c.cmd(250, "", "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.cmd(354, "", "DATA")
	w := c.c.W
	fmt.Fprintf(w, "From: alice@sender.test\r\nSubject: cut short\r\n\r\n%s", strings.Repeat("x", 200_000))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	c.c.Close()
	testutil.Eventually(t, 10*time.Second, "the milter connection closed", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.ended == 2
	})
	c = dialSMTP(t, gw.addr)
	c.cmd(250, "", "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	c.data("From: alice@sender.test\r\nSubject: whole\r\n\r\nbody\r\n", 250, "")
	if msg := gw.delivered(t, "bob"); !bytes.Contains(msg, []byte("Subject: whole")) {
		t.Errorf("delivered:\n%s", msg)
	}
}

// TestJudgeAbortEndsSession: a judge aborted in the middle of a message
// (its goroutine waiting for more) lets the session close, promptly.
func TestJudgeAbortEndsSession(t *testing.T) {
	addr, rec := startScripted(t, 0)
	m := &Milter{Address: addr, logger: zap.NewNop()}
	if err := m.setup(); err != nil {
		t.Fatal(err)
	}
	tx := new(smtpapp.Transaction)
	in := &smtpapp.CheckInput{Sender: "alice@sender.test", Recipient: "bob@example.test", ClientIP: net.IPv4(192, 0, 2, 1), Tx: tx}
	if v := m.CheckRecipient(context.Background(), in); v.Result != smtpapp.VerdictAccept {
		t.Fatalf("recipient: %+v", v)
	}
	j := m.StartMessage(&smtpapp.MessageInput{Tx: tx})
	_, _ = j.Write([]byte("From: alice@sender.test\r\nSubj"))
	// Once the milter has had DATA, the judge waits for the rest of the
	// header.
	testutil.Eventually(t, 10*time.Second, "DATA at the milter", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.data == 1
	})
	j.Abort()
	closed := make(chan struct{})
	go func() {
		_ = tx.Value(txKey{m}).(*session).Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not close after Abort")
	}
}

// TestRecipientDeadline: the check's context ends a conversation that
// waits for the milter (before the milter's own timeout): the default
// action decides.
func TestRecipientDeadline(t *testing.T) {
	addr, _ := startScripted(t, 0)
	m := &Milter{Address: addr, Timeout: caddy.Duration(time.Minute), logger: zap.NewNop()}
	if err := m.setup(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	in := &smtpapp.CheckInput{Sender: "alice@sender.test", Recipient: "stall@example.test", ClientIP: net.IPv4(192, 0, 2, 1), Tx: new(smtpapp.Transaction)}
	start := time.Now()
	if v := m.CheckRecipient(ctx, in); v.Result != smtpapp.VerdictTempfail {
		t.Errorf("verdict %+v, want the default action (tempfail)", v)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the check took %v", d)
	}
}

// TestMilterReplacesBody: a milter's replace-body (an attachment
// stripper) replaces everything after the header section, which is
// delivered as received; the new body's bare LF becomes CRLF.
func TestMilterReplacesBody(t *testing.T) {
	addr, _ := startScripted(t, 0)
	gw := startGateway(t, map[string]any{"address": addr})
	c := dialSMTP(t, gw.addr)
	c.cmd(250, "", "MAIL FROM:<alice@sender.test>")
	c.cmd(250, "", "RCPT TO:<bob@example.test>")
	head := "From: alice@sender.test\r\nSubject: replace me\r\nX-Keep: this\r\n"
	c.data(head+"\r\n"+strings.Repeat("attachment data\r\n", 5000), 250, "")
	msg := string(gw.delivered(t, "bob"))
	gotHead, body, _ := strings.Cut(msg, "\r\n\r\n")
	if body != "The attachment was removed.\r\nSee the policy.\r\n" {
		t.Errorf("delivered body %q", body)
	}
	if !strings.HasSuffix(gotHead+"\r\n", head) || !strings.Contains(gotHead, "\r\nReceived: from ") {
		t.Errorf("delivered header section:\n%s", gotHead)
	}
}
