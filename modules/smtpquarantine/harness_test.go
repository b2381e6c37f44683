package smtpquarantine_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	_ "github.com/caddy-smtp/caddy-smtp/modules/standard"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// quarantiner is a test message check that quarantines every message
// whose header section contains "quarantine-me".
type quarantiner struct{}

func (quarantiner) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.checks.spam_test", New: func() caddy.Module { return new(quarantiner) }}
}

func (quarantiner) StartMessage(*smtpapp.MessageInput) smtpapp.MessageJudge { return &judge{} }

type judge struct{ head strings.Builder }

func (j *judge) Write(p []byte) (int, error) {
	if j.head.Len() < 8192 {
		j.head.Write(p)
	}
	return len(p), nil
}

func (j *judge) Finish(context.Context) smtpapp.Verdict {
	head, _, _ := strings.Cut(j.head.String(), "\r\n\r\n")
	if !strings.Contains(head, "quarantine-me") {
		return smtpapp.Accept()
	}
	return smtpapp.Verdict{Result: smtpapp.VerdictQuarantine, Reason: "looks like spam", Note: "score 9.5"}
}

func (j *judge) Abort() {}

func init() { caddy.RegisterModule(quarantiner{}) }

// The users of the test site; every one has the password "secret".
const password = "secret"

// env is a running gateway: the smtp app quarantining with the test
// check and delivering example.test and example.org to maildirs, and an
// http app serving the quarantine behind basic_auth (except /link).
type env struct {
	t    *testing.T
	dir  string
	cfg  []byte
	smtp string // the SMTP listener
	web  string // http://127.0.0.1:port/
	mail string // maildirs: mail/<domain>/<local>
}

// start loads the config with the handler's options, which it gets from
// options given the site's URL.
func start(t *testing.T, options func(web string) map[string]any) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, mail: filepath.Join(dir, "mail")}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	var accounts []any
	for _, u := range []string{"alice", "bob@example.test", "carol", "dave"} {
		accounts = append(accounts, map[string]any{"username": u, "password": string(hash)})
	}
	port := testutil.FreePort(t) // Caddy's http app binds the address it is given
	e.web = fmt.Sprintf("http://127.0.0.1:%d/", port)
	handler := options(e.web)
	handler["handler"] = "smtp_quarantine"
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "storage")},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps": map[string]any{
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"smtp": map[string]any{
				"hostname": "mx.example.test",
				"queue":    map[string]any{"path": filepath.Join(dir, "spool"), "retry_initial": "50ms", "retry_max": "200ms"},
				"servers": map[string]any{"mx": map[string]any{
					"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
					"checks": []any{map[string]any{"check": "spam_test"}},
				}},
				"routes": []any{map[string]any{"domains": []string{"example.test", "example.org"},
					"deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true}}},
			},
			"http": map[string]any{"servers": map[string]any{"web": map[string]any{
				"listen":          []string{fmt.Sprintf("127.0.0.1:%d", port)},
				"automatic_https": map[string]any{"disable": true},
				"routes": []any{
					map[string]any{
						"match":  []any{map[string]any{"not": []any{map[string]any{"path": []string{"/link"}}}}},
						"handle": []any{map[string]any{"handler": "authentication", "providers": map[string]any{"http_basic": map[string]any{"accounts": accounts}}}},
					},
					map[string]any{"handle": []any{handler}},
				},
			}}},
		},
	}
	e.cfg, err = json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.load()
	t.Cleanup(func() {
		_ = caddy.Stop()
		spool := filepath.Join(dir, "spool")
		testutil.Eventually(t, 10*time.Second, "queue closed after stop", func() bool {
			s, err := spoolfs.Lock(spool, "msg")
			if err != nil {
				return false
			}
			s.Close()
			return true
		})
	})
	return e
}

// load (re)loads the config, as a restart does, and finds the SMTP
// listener.
func (e *env) load() {
	e.t.Helper()
	if err := caddy.Load(e.cfg, true); err != nil {
		e.t.Fatalf("loading config: %v", err)
	}
	app, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		e.t.Fatal(err)
	}
	e.smtp = app.(*smtpapp.App).Servers["mx"].Addrs()[0].String()
	testutil.WaitForPort(e.t, strings.TrimSuffix(strings.TrimPrefix(e.web, "http://"), "/"), 10*time.Second)
}

// send submits a message over SMTP (to: recipients separated by commas)
// and returns its queue ID.
func (e *env) send(from, to, header, body string) string {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.smtp, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(c)
	step := func(code int, format string, args ...any) string {
		if format != "" {
			if err := tp.PrintfLine(format, args...); err != nil {
				e.t.Fatal(err)
			}
		}
		_, msg, err := tp.ReadResponse(code)
		if err != nil {
			e.t.Fatalf("%q: %v", fmt.Sprintf(format, args...), err)
		}
		return msg
	}
	step(220, "")
	step(250, "EHLO client.example")
	step(250, "MAIL FROM:<%s>", from)
	for _, rcpt := range strings.Split(to, ",") {
		step(250, "RCPT TO:<%s>", rcpt)
	}
	step(354, "DATA")
	w := tp.DotWriter()
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nDate: Thu, 3 Dec 2026 10:00:00 +0000\r\n%s\r\n\r\n%s", from, to, header, body)
	w.Close()
	reply := step(250, "")
	step(221, "QUIT")
	_, id, ok := strings.Cut(reply, "queued as ")
	if !ok {
		e.t.Fatalf("submission: %q", reply)
	}
	return strings.TrimSpace(id)
}

// queue is the running queue.
func (e *env) queue() *queue.Queue {
	e.t.Helper()
	app, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		e.t.Fatal(err)
	}
	return app.(*smtpapp.App).RunningQueue()
}

// state is the queue state of a message ("gone" when it left the queue).
func (e *env) state(id string) string {
	s, err := e.queue().Snapshot(id)
	if err != nil {
		return "gone"
	}
	return s.State
}

// mails returns the files delivered to a mailbox.
func (e *env) mails(addr string) []string {
	files, _ := filepath.Glob(filepath.Join(e.mail, queue.Domain(addr), queue.LocalPart(addr), "new", "*"))
	return files
}

// waitMail waits until a mailbox holds n messages and returns them.
func (e *env) waitMail(addr string, n int) []string {
	e.t.Helper()
	testutil.Eventually(e.t, 15*time.Second, fmt.Sprintf("%d messages for %s", n, addr), func() bool { return len(e.mails(addr)) >= n })
	var out []string
	for _, f := range e.mails(addr) {
		b, err := os.ReadFile(f)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// request makes a request to the site as a user ("" for none).
func (e *env) request(user, method, path string, form url.Values, header map[string]string) (int, http.Header, string) {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.web+strings.TrimPrefix(path, "/"), body)
	if err != nil {
		e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(bufio.NewReader(resp.Body))
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}
