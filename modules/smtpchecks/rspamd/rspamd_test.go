package rspamd_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	_ "github.com/caddy-smtp/caddy-smtp/modules/standard"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// gtube is a message with one of rspamd's GTUBE patterns: X (reject), Y
// (add header), Z (rewrite subject).
func gtube(variant, subject string) string {
	return "From: <a@sender.test>\r\nTo: <b@example.test>\r\nSubject: " + subject + "\r\n\r\n" +
		variant + "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
}

// cleanMessage is a plain message that carries forged X-Spam-Score and
// X-Spamd-Bar fields.
const cleanMessage = "From: Sender <a@sender.test>\r\nTo: <clean@example.test>\r\nSubject: lunch\r\n" +
	"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <lunch@sender.test>\r\nX-Spam-Score: -100\r\nX-Spamd-Bar: forged\r\n\r\n" +
	"Hello,\r\n\r\nlunch at noon tomorrow?\r\n"

// send delivers one message over SMTP and returns the reply to the end
// of data (or to the command that failed).
func send(t *testing.T, addr, rcpt, msg string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// a hung transfer fails the test instead of hanging it
	_ = conn.SetDeadline(time.Now().Add(40 * time.Second))
	c := textproto.NewConn(conn)
	defer c.Close()
	step := func(cmd string, want int) string {
		if cmd != "" {
			if _, err := c.Cmd("%s", cmd); err != nil {
				t.Fatal(err)
			}
		}
		code, text, err := c.ReadResponse(want)
		if err != nil {
			return fmt.Sprintf("%d %s", code, text)
		}
		return ""
	}
	for _, s := range []struct {
		cmd  string
		want int
	}{{"", 220}, {"EHLO client.sender.test", 250}, {"MAIL FROM:<a@sender.test>", 250}, {"RCPT TO:<" + rcpt + ">", 250}, {"DATA", 354}} {
		if r := step(s.cmd, s.want); r != "" {
			t.Fatalf("%s: %s", s.cmd, r)
		}
	}
	w := c.DotWriter()
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	code, text, _ := c.ReadResponse(0)
	_, _ = c.Cmd("QUIT")
	return fmt.Sprintf("%d %s", code, text)
}

// gateway runs the smtp app with three servers that check with the
// given rspamd: "mx" (defaults, fail open), "quar" (quarantine_at 5) and
// "closed" (fail_open off), delivering example.test to maildirs.
type gateway struct {
	app  *smtpapp.App
	mail string
}

func startGateway(t *testing.T, rspamdURL string) *gateway {
	t.Helper()
	dir := t.TempDir()
	server := func(check map[string]any) map[string]any {
		check["check"], check["url"] = "rspamd", rspamdURL
		return map[string]any{
			// one 127.0.0.1:0 per app: the others get a free port
			"listen": []any{map[string]any{"address": fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), "tls": "off"}},
			"checks": []any{check},
		}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": testutil.StorageDir(t)},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"smtp": map[string]any{
			"hostname": "mx.gateway.test",
			"queue":    map[string]any{"path": filepath.Join(dir, "spool")},
			"servers": map[string]any{
				"mx":     server(map[string]any{"timeout": "2s"}),
				"quar":   server(map[string]any{"quarantine_at": 5}),
				"closed": server(map[string]any{"fail_open": false, "timeout": "1s"}),
			},
			"routes": []any{map[string]any{
				"domains": []string{"example.test"},
				"deliver": map[string]any{"target": "maildir", "path": filepath.Join(dir, "mail", "{local}"), "create_mailboxes": true},
			}},
		}},
	}
	raw, _ := json.Marshal(cfg)
	if err := caddy.Load(raw, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	app, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		t.Fatal(err)
	}
	return &gateway{app: app.(*smtpapp.App), mail: filepath.Join(dir, "mail")}
}

func (g *gateway) addr(t *testing.T, server string) string {
	t.Helper()
	addrs := g.app.Servers[server].Addrs()
	if len(addrs) == 0 {
		t.Fatalf("server %s has no listener", server)
	}
	return addrs[0].String()
}

// delivered waits for the one message of a mailbox and returns its
// header section, each line ending in CRLF.
func (g *gateway) delivered(t *testing.T, local string) string {
	t.Helper()
	var files []string
	testutil.Eventually(t, 15*time.Second, "a message for "+local, func() bool {
		files, _ = filepath.Glob(filepath.Join(g.mail, local, "new", "*"))
		return len(files) > 0
	})
	if len(files) != 1 {
		t.Fatalf("%d messages for %s, want 1", len(files), local)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(b), "\r\n\r\n")
	return head + "\r\n"
}

// queueID is the id in a "250 2.0.0 OK queued as ID" reply.
func queueID(reply string) string {
	f := strings.Fields(reply)
	return f[len(f)-1]
}

// TestRspamd sends messages through real SMTP listeners whose rspamd
// check asks a real rspamd: GTUBE is refused with a 550 that says nothing
// of rspamd; a clean message is delivered with its score (a forged score
// removed); "add header" tags, "rewrite subject" replaces the Subject;
// quarantine_at holds a message; rspamd frozen (SIGSTOP) or stopped is
// accepted by the fail-open server and deferred with 451 by the
// fail-closed one.
func TestRspamd(t *testing.T) {
	rs := testutil.StartRspamd(t)
	g := startGateway(t, rs.URL)
	mx := g.addr(t, "mx")

	if r := send(t, mx, "spam@example.test", gtube("X", "gtube")); !strings.HasPrefix(r, "550 5.7.1 ") ||
		strings.Contains(strings.ToLower(r), "gtube") || strings.Contains(strings.ToLower(r), "rspamd") {
		t.Errorf("GTUBE: %q, want a 550 5.7.1 that names no internals", r)
	}

	r := send(t, mx, "clean@example.test", cleanMessage)
	if !strings.HasPrefix(r, "250 ") {
		t.Fatalf("clean message: %q", r)
	}
	head := g.delivered(t, "clean")
	// rspamd got the queue ID of our 250 reply (Queue-Id).
	if id := queueID(r); !strings.Contains(head, "\r\nX-Rspamd-Queue-Id: "+id+"\r\n") {
		t.Errorf("rspamd was not given queue ID %s:\n%s", id, head)
	}
	if !strings.Contains(head, "\r\nX-Spam-Status: No, score=") || !strings.Contains(head, "\r\nX-Spam-Score: ") ||
		strings.Contains(head, "X-Spam-Score: -100") || strings.Contains(head, "\r\nX-Spam: ") {
		t.Errorf("clean message's header:\n%s", head)
	}
	// The milter block of rspamd's reply replaces X-Spamd-Bar.
	if !strings.Contains(head, "\r\nX-Spamd-Bar: /\r\n") || strings.Contains(head, "forged") {
		t.Errorf("rspamd's header changes were not applied:\n%s", head)
	}
	// rspamd compared the envelope (From, Rcpt headers) with the message.
	if !strings.Contains(head, "FROM_EQ_ENVFROM") || !strings.Contains(head, "TO_MATCH_ENVRCPT_ALL") {
		t.Errorf("rspamd did not get the envelope:\n%s", head)
	}

	if r := send(t, mx, "tagged@example.test", gtube("Y", "offer")); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("add header: %q", r)
	}
	if head := g.delivered(t, "tagged"); !strings.Contains(head, "\r\nX-Spam: Yes\r\n") ||
		!strings.Contains(head, "\r\nX-Spam-Status: Yes, score=6.00 ") || !strings.Contains(head, "\r\nSubject: offer\r\n") {
		t.Errorf("add header: the delivered header lacks X-Spam: Yes, or its Subject:\n%s", head)
	}

	if r := send(t, mx, "rewritten@example.test", gtube("Z", "prize")); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("rewrite subject: %q", r)
	}
	if head := g.delivered(t, "rewritten"); !strings.Contains(head, "\r\nSubject: *** SPAM *** prize\r\n") ||
		strings.Count(head, "Subject:") != 1 {
		t.Errorf("rewrite subject: want one Subject, rspamd's:\n%s", head)
	}

	// quarantine_at 5: the "add header" message (6 points) is held, with
	// rspamd's summary for the admin view.
	r = send(t, g.addr(t, "quar"), "held@example.test", gtube("Y", "held"))
	if !strings.HasPrefix(r, "250 ") {
		t.Fatalf("quarantine_at: %q", r)
	}
	snap, err := g.app.RunningQueue().Snapshot(queueID(r))
	if err != nil {
		t.Fatal(err)
	}
	var result string
	for _, c := range snap.Checks {
		if c.Check == "rspamd" {
			result = c.Verdict + ": " + c.Result
		}
	}
	if snap.State != queue.StateQuarantine || snap.Quarantine == nil || snap.Quarantine.Check != "rspamd" ||
		!strings.HasPrefix(result, "quarantine: add header, score 6.00/15.00") {
		t.Errorf("quarantine_at: state %s, quarantine %+v, result %q", snap.State, snap.Quarantine, result)
	}

	// Frozen: connections are taken (the kernel's backlog) and never
	// answered; the timeouts decide.
	// A message larger than what the socket buffers and our pipe hold
	// must not hang the transfer either.
	rs.Signal(syscall.SIGSTOP)
	start := time.Now()
	if r := send(t, g.addr(t, "closed"), "frozen@example.test", cleanMessage); !strings.HasPrefix(r, "451 4.7.1 ") {
		t.Errorf("fail closed, rspamd frozen: %q, want 451 4.7.1", r)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("fail closed, rspamd frozen: answered after %s, timeout is 1s", took)
	}
	if r := send(t, mx, "frozen@example.test", cleanMessage); !strings.HasPrefix(r, "250 ") {
		t.Errorf("fail open, rspamd frozen: %q, want 250", r)
	}
	big := cleanMessage + strings.Repeat(strings.Repeat("lunch ", 15)+"\r\n", 100_000) // 9 MB
	if r := send(t, mx, "big@example.test", big); !strings.HasPrefix(r, "250 ") {
		t.Errorf("fail open, rspamd frozen, 9 MB: %q, want 250", r)
	}
	rs.Signal(syscall.SIGCONT)
	rs.Signal(syscall.SIGKILL)
	rs.Wait()
	// Its workers die a moment after the main process.
	testutil.Eventually(t, 10*time.Second, "rspamd's port closed", func() bool {
		c, err := net.Dial("tcp", strings.TrimPrefix(rs.URL, "http://"))
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if r := send(t, g.addr(t, "closed"), "down@example.test", cleanMessage); !strings.HasPrefix(r, "451 4.7.1 ") {
		t.Errorf("fail closed, rspamd down: %q, want 451 4.7.1", r)
	}
	if r := send(t, mx, "down@example.test", cleanMessage); !strings.HasPrefix(r, "250 ") {
		t.Errorf("fail open, rspamd down: %q, want 250", r)
	}
	if head := g.delivered(t, "down"); strings.Contains(head, "X-Spam-Score") {
		t.Errorf("an unscanned message got a score:\n%s", head)
	}
}

// TestProvisionErrors checks that JSON settings the Caddyfile cannot
// produce are refused when the config loads, saying what is wrong.
func TestProvisionErrors(t *testing.T) {
	t.Setenv("RSPAMD_TEST_EMPTY", "")
	for _, tc := range []struct {
		check map[string]any
		want  string
	}{
		{map[string]any{"url": "ftp://127.0.0.1:11333"}, "rspamd: url 'ftp://127.0.0.1:11333': want http://host:port"},
		{map[string]any{"url": "http://user:pw@127.0.0.1:11333"}, "want http://host:port"},
		{map[string]any{"add_header": "reject"}, "rspamd: add_header 'reject': want tag or quarantine"},
		{map[string]any{"greylist": "quarantine"}, "rspamd: greylist 'quarantine': want tempfail or accept"},
		{map[string]any{"timeout": -1}, "rspamd: timeout must not be negative"},
		{map[string]any{"password": "{env.RSPAMD_TEST_EMPTY}"}, "rspamd: password: "},
	} {
		tc.check["check"] = "rspamd"
		dir := t.TempDir()
		cfg := map[string]any{
			"admin":   map[string]any{"disabled": true},
			"storage": map[string]any{"module": "file_system", "root": testutil.StorageDir(t)},
			"apps": map[string]any{"smtp": map[string]any{
				"queue": map[string]any{"path": filepath.Join(dir, "spool")},
				"servers": map[string]any{"mx": map[string]any{
					"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
					"checks": []any{tc.check},
				}},
			}},
		}
		raw, _ := json.Marshal(cfg)
		var c caddy.Config
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		if err := caddy.Validate(&c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.check, err, tc.want)
		}
	}
}
