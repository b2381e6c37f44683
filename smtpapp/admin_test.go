package smtpapp_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpadmin"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// adminEnv is a running gateway whose route for example.test relays to
// one address, with the admin API on a unix socket and retries an hour
// apart (only a flush or a release retries within a test).
type adminEnv struct {
	*testEnv
	sock   string
	client *http.Client
	smtp   string // the gateway's SMTP address
}

func startAdminEnv(t *testing.T, relay string, listen map[string]any) *adminEnv {
	t.Helper()
	e := newTestEnv(t)
	a := &adminEnv{testEnv: e, sock: filepath.Join(e.dir, "admin.sock")}
	if listen == nil {
		listen = map[string]any{"address": "127.0.0.1:0", "tls": "off"}
	}
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{listen}}},
		"routes": []any{map[string]any{"domains": []string{"example.test"},
			"deliver": map[string]any{"target": "relay", "hosts": []string{relay}}}},
		"queue": map[string]any{"path": e.spool, "retry_initial": "1h", "retry_max": "1h"},
	}, func(c map[string]any) {
		c["admin"] = map[string]any{"listen": "unix/" + a.sock, "config": map[string]any{"persist": false}}
	}))
	a.smtp = addrsOf(app, "mx")[0]
	a.client = adminClient(a.sock)
	return a
}

// deadAddr returns a loopback address where nothing listens (until a test
// starts a receiver there).
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// submit sends a message to the gateway and returns its queue ID.
func (a *adminEnv) submit(to, subject string) string {
	a.t.Helper()
	d := dial(a.t, a.smtp)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	reply := d.sendMail("s@sender.test", to, "Subject: "+subject+"\r\n\r\nbody of "+subject)
	d.cmd("QUIT", "221")
	_, id, ok := strings.Cut(reply, "queued as ")
	if !strings.HasPrefix(reply, "250") || !ok {
		a.t.Fatalf("submission: %q", reply)
	}
	return strings.TrimSpace(id)
}

// do calls the admin API and returns the status and body.
func (a *adminEnv) do(method, path string) (int, []byte) {
	a.t.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// ok calls the admin API, requires a 200 and decodes the response into v.
func (a *adminEnv) ok(method, path string, v any) {
	a.t.Helper()
	status, body := a.do(method, path)
	if status != http.StatusOK {
		a.t.Fatalf("%s %s: %d %s", method, path, status, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			a.t.Fatalf("%s %s: %v: %s", method, path, err, body)
		}
	}
}

// fails calls the admin API and requires the given status and a JSON
// error containing want.
func (a *adminEnv) fails(method, path string, status int, want string) {
	a.t.Helper()
	got, body := a.do(method, path)
	var e struct{ Error string }
	if got != status || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, want) {
		a.t.Fatalf("%s %s: got %d %s, want %d with %q", method, path, got, body, status, want)
	}
}

func (a *adminEnv) list() map[string]queue.Snapshot {
	a.t.Helper()
	var msgs []queue.Snapshot
	a.ok(http.MethodGet, "/smtp/queue", &msgs)
	out := make(map[string]queue.Snapshot)
	for _, m := range msgs {
		out[m.ID] = m
	}
	return out
}

// waitState waits until the listing shows a message in a state.
func (a *adminEnv) waitState(id, state string) queue.Snapshot {
	a.t.Helper()
	var m queue.Snapshot
	eventually(a.t, id+" "+state, func() bool {
		m = a.list()[id]
		return m.State == state
	})
	return m
}

// quietly checks that a receiver gets nothing for a while.
func quietly(t *testing.T, r *receiver) {
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	if n := len(r.messages()); n != 0 {
		t.Fatalf("receiver got %d messages", n)
	}
}

func TestAdminListFlushDelete(t *testing.T) {
	relay := deadAddr(t)
	a := startAdminEnv(t, relay, nil)
	keep := a.submit("a@example.test", "keep")
	drop := a.submit("b@example.test", "drop")

	// Both are deferred: the relay is down.
	for _, id := range []string{keep, drop} {
		m := a.waitState(id, queue.StateDeferred)
		if m.Attempts != 1 || m.From != "s@sender.test" || len(m.Recipients) != 1 || m.Recipients[0].Status != "pending" ||
			m.LastError == "" || time.Until(m.NextAttempt) < 30*time.Minute || m.Size == 0 || m.Server != "mx" {
			t.Fatalf("deferred message %+v", m)
		}
	}
	var raw []map[string]any
	a.ok(http.MethodGet, "/smtp/queue", &raw)
	for _, field := range []string{"id", "from", "recipients", "size", "arrived", "age_seconds", "attempts", "next_attempt", "state", "held", "last_error"} {
		if _, ok := raw[0][field]; !ok {
			t.Errorf("listing has no %q: %v", field, raw[0])
		}
	}

	// Envelope and header; the body only when asked.
	var d smtpadmin.MessageDetail
	a.ok(http.MethodGet, "/smtp/queue/"+keep, &d)
	if d.ID != keep || !strings.Contains(d.Headers, "Subject: keep") || !strings.Contains(d.Headers, "Received: ") || d.Body != "" {
		t.Fatalf("message without body: %+v", d)
	}
	a.ok(http.MethodGet, "/smtp/queue/"+keep+"?body=1", &d)
	if !strings.Contains(d.Body, "body of keep") || strings.Contains(d.Body, "Subject:") {
		t.Fatalf("body %q", d.Body)
	}

	// Errors.
	a.fails(http.MethodGet, "/smtp/queue/NOSUCHMESSAGE", http.StatusNotFound, "no such message")
	a.fails(http.MethodPost, "/smtp/queue", http.StatusMethodNotAllowed, "method not allowed")
	a.fails(http.MethodGet, "/smtp/queue/flush", http.StatusMethodNotAllowed, "method not allowed")
	a.fails(http.MethodPut, "/smtp/queue/"+keep, http.StatusMethodNotAllowed, "method not allowed")
	a.fails(http.MethodGet, "/smtp/queue/"+keep+"?body=maybe", http.StatusBadRequest, "not a boolean")
	a.fails(http.MethodPost, "/smtp/queue/"+keep+"/frobnicate", http.StatusNotFound, "not found")
	a.fails(http.MethodPost, "/smtp/domains/a%2Fb/hold", http.StatusBadRequest, "invalid domain")

	// Delete one: its files go.
	var res smtpadmin.ActionResult
	a.ok(http.MethodDelete, "/smtp/queue/"+drop, &res)
	if res.ID != drop || !res.Deleted {
		t.Fatalf("delete: %+v", res)
	}
	if _, ok := a.list()[drop]; ok {
		t.Fatal("deleted message still listed")
	}
	if files, _ := filepath.Glob(filepath.Join(a.spool, "msg", drop+".*")); len(files) != 0 {
		t.Fatalf("deleted message still in the spool: %v", files)
	}
	a.fails(http.MethodDelete, "/smtp/queue/"+drop, http.StatusNotFound, "no such message")

	// The relay comes back; a flush delivers at once.
	r := startReceiver(t, receiverOpts{addr: relay})
	quietly(t, r)
	a.ok(http.MethodPost, "/smtp/queue/"+keep+"/flush", &res)
	if res.Flushed == nil || *res.Flushed != 1 {
		t.Fatalf("flush: %+v", res)
	}
	msgs := r.waitMessages(1)
	if got := msgs[0].header("Subject"); got != "keep" {
		t.Fatalf("delivered %q", got)
	}
	eventually(t, "empty queue", func() bool { return len(a.list()) == 0 })
	a.fails(http.MethodPost, "/smtp/queue/"+keep+"/flush", http.StatusNotFound, "no such message")
}

func TestAdminHoldMessage(t *testing.T) {
	relay := deadAddr(t)
	a := startAdminEnv(t, relay, nil)
	held := a.submit("a@example.test", "held")
	other := a.submit("b@example.test", "other")
	a.waitState(held, queue.StateDeferred)
	a.waitState(other, queue.StateDeferred)

	var res smtpadmin.ActionResult
	a.ok(http.MethodPost, "/smtp/queue/"+held+"/hold", &res)
	if res.Held == nil || !*res.Held {
		t.Fatalf("hold: %+v", res)
	}
	if m := a.list()[held]; m.State != queue.StateHeld || !m.Held || !m.NextAttempt.IsZero() {
		t.Fatalf("held message %+v", m)
	}
	// That the hold is saved with the message (and survives a restart)
	// is tested in package queue, for both spool formats.

	// A flush of everything skips it; flushing it alone is a conflict.
	r := startReceiver(t, receiverOpts{addr: relay})
	a.fails(http.MethodPost, "/smtp/queue/"+held+"/flush", http.StatusConflict, "held")
	a.ok(http.MethodPost, "/smtp/queue/flush", &res)
	if got := r.waitMessages(1)[0].header("Subject"); got != "other" {
		t.Fatalf("delivered %q", got)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(r.messages()); n != 1 {
		t.Fatalf("receiver got %d messages; the held one was delivered", n)
	}

	// Release: due now.
	a.ok(http.MethodPost, "/smtp/queue/"+held+"/release", &res)
	if res.Held == nil || *res.Held {
		t.Fatalf("release: %+v", res)
	}
	if got := r.waitMessages(2)[1].header("Subject"); got != "held" {
		t.Fatalf("delivered %q", got)
	}
}

func TestAdminHoldDomain(t *testing.T) {
	r := startReceiver(t, receiverOpts{})
	a := startAdminEnv(t, r.addr, nil)
	var res smtpadmin.ActionResult
	a.ok(http.MethodPost, "/smtp/domains/Example.Test/hold", &res)
	if res.Domain != "example.test" || res.Held == nil || !*res.Held {
		t.Fatalf("hold domain: %+v", res)
	}
	id := a.submit("a@example.test", "domain held")
	a.waitState(id, queue.StateDomainHeld)
	quietly(t, r)
	var domains []smtpadmin.HeldDomain
	a.ok(http.MethodGet, "/smtp/domains", &domains)
	if len(domains) != 1 || domains[0] != (smtpadmin.HeldDomain{Domain: "example.test", Messages: 1, Recipients: 1}) {
		t.Fatalf("held domains %+v", domains)
	}
	raw, err := os.ReadFile(filepath.Join(a.spool, "held-domains.json"))
	if err != nil || !bytes.Contains(raw, []byte(`"example.test"`)) {
		t.Fatalf("held domains not saved: %s %v", raw, err)
	}
	a.fails(http.MethodGet, "/smtp/domains/example.test/hold", http.StatusMethodNotAllowed, "method not allowed")

	a.ok(http.MethodPost, "/smtp/domains/example.test/release", &res)
	if got := r.waitMessages(1)[0].header("Subject"); got != "domain held" {
		t.Fatalf("delivered %q", got)
	}
	a.ok(http.MethodGet, "/smtp/domains", &domains)
	if len(domains) != 0 {
		t.Fatalf("held domains after release: %+v", domains)
	}
}

func TestAdminWithoutSMTPApp(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	cfg := fmt.Sprintf(`{"admin": {"listen": "unix/%s", "config": {"persist": false}}, "storage": {"module": "file_system", "root": %q}}`, sock, sharedStorage)
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	a := &adminEnv{testEnv: &testEnv{t: t}, client: adminClient(sock)}
	a.fails(http.MethodGet, "/smtp/queue", http.StatusNotFound, "no smtp app")
	a.fails(http.MethodGet, "/smtp/domains", http.StatusNotFound, "no smtp app")
}

// buildCaddy builds ./cmd/caddy (Caddy with this plugin and its CLI) into
// the test's temporary directory.
func buildCaddy(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the caddy binary")
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/caddy").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/caddy: %v\n%s", err, out)
	}
	return bin
}

// runCLI runs the caddy binary and returns its stdout; it fails the test
// unless the exit status is as wanted.
func runCLI(t *testing.T, bin string, wantOK bool, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if (err == nil) != wantOK {
		t.Fatalf("caddy %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String()
}

func TestAdminCLI(t *testing.T) {
	bin := buildCaddy(t)
	relay := deadAddr(t)
	a := startAdminEnv(t, relay, map[string]any{"address": "127.0.0.1:0"}) // STARTTLS offered
	addr := []string{"--address", "unix/" + a.sock}
	cli := func(wantOK bool, args ...string) string {
		t.Helper()
		return runCLI(t, bin, wantOK, append(args, addr...)...)
	}

	// caddy smtp send: plaintext, then STARTTLS (the internal CA is not
	// in the system roots: --insecure).
	out := runCLI(t, bin, true, "smtp", "send", "--server", a.smtp, "--from", "s@sender.test",
		"--to", "a@example.test", "--subject", "plain")
	if !strings.Contains(out, "in plaintext") || !strings.Contains(out, "accepted: 2.0.0 OK queued as ") {
		t.Fatalf("send: %s", out)
	}
	plain := strings.TrimSpace(out[strings.LastIndex(out, "queued as ")+len("queued as "):])
	out = runCLI(t, bin, false, "smtp", "send", "--starttls", "--server", a.smtp, "--from", "s@sender.test", "--to", "a@example.test")
	if !strings.Contains(out, "not trusted") {
		t.Fatalf("send with an untrusted certificate: %s", out)
	}
	// Verified against the internal CA for our name, the server given by
	// its address: --servername.
	root := filepath.Join(sharedStorage, "pki", "authorities", "local", "root.crt")
	out = runCLI(t, bin, true, "smtp", "send", "--starttls", "--ca", root, "--servername", testHost, "--server", a.smtp,
		"--from", "s@sender.test", "--to", "b@example.test", "--subject", "over tls")
	if !strings.Contains(out, "with STARTTLS (TLSv1.3") || !strings.Contains(out, "certificate verified") || !strings.Contains(out, "queued as") {
		t.Fatalf("send with STARTTLS: %s", out)
	}
	runCLI(t, bin, false, "smtp", "send", "--auth", "u:p", "--server", a.smtp, "--from", "s@sender.test", "--to", "b@example.test")

	a.waitState(plain, queue.StateDeferred)
	out = cli(true, "smtp", "queue", "list")
	if !strings.Contains(out, plain) || !strings.Contains(out, "deferred") || !strings.Contains(out, "a@example.test") {
		t.Fatalf("queue list: %s", out)
	}
	var msgs []queue.Snapshot
	if err := json.Unmarshal([]byte(cli(true, "smtp", "queue", "list", "--json")), &msgs); err != nil || len(msgs) != 2 {
		t.Fatalf("queue list --json: %v %+v", err, msgs)
	}
	out = cli(true, "smtp", "queue", "show", plain, "--body")
	if !strings.Contains(out, "Subject: plain") || !strings.Contains(out, "test message sent by") {
		t.Fatalf("queue show: %s", out)
	}
	if out = cli(true, "smtp", "queue", "hold", plain); !strings.Contains(out, plain+" held") {
		t.Fatalf("queue hold: %s", out)
	}
	if out = cli(true, "smtp", "queue", "list"); !strings.Contains(out, "held") {
		t.Fatalf("queue list after hold: %s", out)
	}
	if out = cli(false, "smtp", "queue", "flush", plain); !strings.Contains(out, "409") {
		t.Fatalf("flush of a held message: %s", out)
	}
	cli(true, "smtp", "queue", "hold-domain", "example.test")
	if out = cli(true, "smtp", "queue", "domains"); !strings.Contains(out, "example.test") {
		t.Fatalf("queue domains: %s", out)
	}
	cli(true, "smtp", "queue", "release-domain", "example.test")
	if out = cli(true, "smtp", "queue", "delete", plain); !strings.Contains(out, "deleted "+plain) {
		t.Fatalf("queue delete: %s", out)
	}
	if out = cli(false, "smtp", "queue", "show", plain); !strings.Contains(out, "404") {
		t.Fatalf("show of a deleted message: %s", out)
	}

	// The other message is delivered by a flush once the relay is back.
	r := startReceiver(t, receiverOpts{addr: relay})
	if out = cli(true, "smtp", "queue", "flush"); !strings.Contains(out, "1 message(s) due now") {
		t.Fatalf("queue flush: %s", out)
	}
	if got := r.waitMessages(1)[0].header("Subject"); got != "over tls" {
		t.Fatalf("delivered %q", got)
	}
}
