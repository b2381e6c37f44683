package smtpapp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	. "github.com/caddy-smtp/caddy-smtp/smtpapp"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// FuzzSession runs one SMTP transaction per input through a running server
// (Server.ServeConn on a net.Pipe: go-smtp parses the command lines, our
// session takes the addresses and parameters) with arbitrary MAIL FROM and
// RCPT TO arguments. Every reply must be a well-formed reply line, the
// session must end at QUIT, and a message that is queued must carry only
// addresses our checks accept, parameters with their defined values, one
// Received field, and an envelope that survives the spool's encoding.
func FuzzSession(f *testing.F) {
	f.Add("<a@example.test>", "<b@example.test>")
	f.Add("<a@example.test> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2Bx", "<b@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2B@example.test")
	f.Add("<> SIZE=10 REQUIRETLS", "<c@[127.0.0.1]> NOTIFY=NEVER")
	f.Add("<\"x@y\"@example.test>", "<@relay.test:b@example.test>")
	f.Add("<ü@example.test> SMTPUTF8 BODY=BINARYMIME", "<b%c@example.test>")
	f.Add("<a@example.test> AUTH=<>", "<b@example.test> ORCPT=utf-8;b\\x{40}example.test")
	srv, q := fuzzServer(f)
	queued := regexp.MustCompile(`^250 2\.0\.0 OK queued as ([A-Z0-9]+)$`)
	f.Fuzz(func(t *testing.T, mail, rcpt string) {
		oneLine := strings.NewReplacer("\r", " ", "\n", " ")
		script := "EHLO fuzz.test\r\nMAIL FROM:" + oneLine.Replace(mail) + "\r\nRCPT TO:" + oneLine.Replace(rcpt) +
			"\r\nDATA\r\nSubject: fuzz\r\n\r\nbody\r\n.\r\nQUIT\r\n"
		replies := converse(t, srv, script)
		if len(replies) == 0 || !strings.HasPrefix(replies[0], "220 ") || !closing(replies[len(replies)-1]) {
			t.Fatalf("session %q: replies %q", script, replies)
		}
		for _, line := range replies {
			if m := queued.FindStringSubmatch(line); m != nil {
				checkQueued(t, q, m[1])
			}
		}
	})
}

// closing reports whether a reply is one after which the server closes the
// connection: QUIT's, or go-smtp's after too many bad commands (the body
// lines of a transaction that failed count as commands).
func closing(reply string) bool {
	return strings.HasPrefix(reply, "221 ") || strings.HasPrefix(reply, "421 ") ||
		strings.HasPrefix(reply, "500 5.5.1 Too many errors")
}

// fuzzServer starts a Caddy with one smtp server whose limits do not get
// in the way of many connections, and holds the routed domain so nothing
// is delivered. Caddy stops when the fuzz test ends.
func fuzzServer(f *testing.F) (*Server, *queue.Queue) {
	dir, err := os.MkdirTemp("", "smtpapp-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	e := &testEnv{dir: dir, storage: sharedStorage, spool: dir + "/spool", mail: dir + "/mail"}
	lots := 1 << 30
	cfg := e.config(map[string]any{"servers": map[string]any{"mx": map[string]any{
		"listen":                 []any{map[string]any{"address": "127.0.0.1:0"}},
		"max_connections_per_ip": lots, "connection_rate_per_ip": lots, "message_rate_per_ip": lots,
		"recipient_rate_per_ip": lots, "max_recipients_per_connection": lots,
	}}})
	raw, err := json.Marshal(cfg)
	if err != nil {
		f.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		f.Fatalf("loading config: %v", err)
	}
	f.Cleanup(func() {
		_ = caddy.Stop()
		os.RemoveAll(dir)
	})
	a, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		f.Fatal(err)
	}
	app := a.(*App)
	q := app.RunningQueue()
	if err := q.HoldDomain("example.test"); err != nil {
		f.Fatal(err)
	}
	return app.Servers["mx"], q
}

// converse writes script to a session served on a pipe and returns the
// reply lines, checking that each is a reply line of RFC 5321 section 4.2.
func converse(t *testing.T, srv *Server, script string) []string {
	t.Helper()
	client, server := net.Pipe()
	defer client.Close()
	_ = client.SetDeadline(time.Now().Add(20 * time.Second))
	served := make(chan error, 1)
	go func() { served <- srv.ServeConn(context.Background(), server, TLSStartTLS) }()
	go func() { _, _ = io.WriteString(client, script) }() // ends with the pipe
	var replies []string
	r := bufio.NewReader(client)
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF && line == "" {
			break
		}
		if err != nil {
			t.Fatalf("after replies %q: reading %q: %v", replies, line, err)
		}
		body, ok := strings.CutSuffix(line, "\r\n")
		if !ok || len(body) < 3 || len(line) > 512 || body[0] < '2' || body[0] > '5' ||
			body[1] < '0' || body[1] > '9' || body[2] < '0' || body[2] > '9' ||
			len(body) > 3 && body[3] != ' ' && body[3] != '-' || strings.ContainsFunc(body, isControl) {
			t.Fatalf("bad reply line %q (after %q)", line, replies)
		}
		replies = append(replies, body)
	}
	client.Close()
	if err := <-served; err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
	return replies
}

var (
	notifyValues = []string{"NEVER", "SUCCESS", "FAILURE", "DELAY"}
	bodyValues   = []string{"", "7BIT", "8BITMIME", "BINARYMIME"}
	retValues    = []string{"", "FULL", "HDRS"}
)

// checkQueued checks the queued message id and removes it.
func checkQueued(t *testing.T, q *queue.Queue, id string) {
	t.Helper()
	var m *queue.Message
	for _, qm := range q.Messages() {
		if qm.ID == id {
			m = &qm
		}
	}
	if m == nil {
		t.Fatalf("message %s replied as queued is not in the queue", id)
	}
	defer func() {
		if _, err := q.Delete(context.Background(), id, false); err != nil {
			t.Fatalf("deleting %s: %v", id, err)
		}
	}()
	if m.From != "" && CheckAddress(m.From, false) != nil {
		t.Fatalf("queued sender %q fails the address check", m.From)
	}
	if !slices.Contains(bodyValues, m.Body) || !slices.Contains(retValues, m.Ret) {
		t.Fatalf("queued BODY=%q RET=%q", m.Body, m.Ret)
	}
	for _, r := range m.Recipients {
		if err := CheckAddress(r.Addr, true); err != nil {
			t.Fatalf("queued recipient %q fails the address check: %v", r.Addr, err)
		}
		for _, n := range r.Notify {
			if !slices.Contains(notifyValues, n) || n == "NEVER" && len(r.Notify) > 1 {
				t.Fatalf("queued NOTIFY %q", r.Notify)
			}
		}
		if r.ORCPT != "" && !strings.Contains(r.ORCPT, ";") {
			t.Fatalf("queued ORCPT %q", r.ORCPT)
		}
	}
	// The spool keeps the envelope as JSON. (Strings that are not UTF-8
	// come back changed: see the report of the fuzz branch.)
	if utf8.ValidString(m.From) && allValid(m.Recipients) {
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var back queue.Message
		// (Message has an unexported store, so compare what the
		// client controls.)
		if err := json.Unmarshal(enc, &back); err != nil || back.From != m.From || back.EnvID != m.EnvID ||
			back.Client != m.Client || !back.Arrived.Equal(m.Arrived) || !reflect.DeepEqual(back.Recipients, m.Recipients) {
			t.Fatalf("envelope %s decodes as %+v, %v", enc, back, err)
		}
	}
	hdr, err := q.ReadHeader(id)
	if err != nil {
		t.Fatalf("header of %s: %v", id, err)
	}
	lines := strings.Split(string(hdr), "\r\n")
	if !strings.HasPrefix(lines[0], "Received: ") {
		t.Fatalf("header starts %q", lines[0])
	}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "Subject:") {
			break
		}
		if l == "" || l[0] != '\t' && l[0] != ' ' {
			t.Fatalf("received header of %s does not hold together: %q", id, hdr)
		}
	}
}

// isControl reports the characters a reply line must not carry (RFC 5321
// section 4.2: text is printable, or HT).
func isControl(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }

func allValid(rcpts []*queue.Recipient) bool {
	for _, r := range rcpts {
		if !utf8.ValidString(r.Addr) || !utf8.ValidString(r.ORCPT) {
			return false
		}
	}
	return true
}
