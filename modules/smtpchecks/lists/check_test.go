package lists_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddypki"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
	_ "github.com/caddyserver/caddy/v2/modules/logging"
	"github.com/caddyserver/certmagic"
	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/lists"
	_ "github.com/caddy-smtp/caddy-smtp/modules/standard"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// childConfigEnv makes the test binary run as a plain Caddy process with
// the config it names: a second node on the same storage.
const childConfigEnv = "LISTS_TEST_CHILD_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(childConfigEnv); path != "" {
		raw, err := os.ReadFile(path)
		if err == nil {
			err = caddy.Load(raw, true)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		select {}
	}
	os.Exit(m.Run())
}

func init() {
	caddy.RegisterModule(refuseCheck{})
}

// refuseCheck is a check that refuses the recipient refuse@... with
// 550 5.7.0, and counts its calls: it shows whether an allow entry ended
// the list of checks before it.
type refuseCheck struct{}

var refuseCalls atomic.Int64

func (refuseCheck) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.checks.test_refuse", New: func() caddy.Module { return new(refuseCheck) }}
}

func (refuseCheck) CheckRecipient(_ context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	refuseCalls.Add(1)
	if strings.HasPrefix(in.Recipient, "refuse@") {
		return smtpapp.Verdict{Result: smtpapp.VerdictReject,
			Reply: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "refused by the test check"}}
	}
	return smtpapp.Accept()
}

// node is a Caddy running in this process: an SMTP server whose checks
// are the lists check and then the test check, its admin API on a TCP
// port, its storage and log in the test's directory.
type node struct {
	t       *testing.T
	dir     string
	storage string
	admin   string // host:port
	smtp    string
	log     string
}

func startNode(t *testing.T, reloadInterval string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{t: t, dir: dir, storage: filepath.Join(dir, "storage"), log: filepath.Join(dir, "caddy.log"),
		admin: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))}
	cfg := map[string]any{
		"admin":   map[string]any{"listen": n.admin, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": n.storage},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN",
			"writer": map[string]any{"output": "file", "filename": n.log}}}},
		"apps": map[string]any{
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"smtp": map[string]any{
				"hostname": "mx.example.internal",
				"queue":    map[string]any{"path": filepath.Join(dir, "spool")},
				"servers": map[string]any{"mx": map[string]any{
					"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
					// Tests wait for a change by asking again and again.
					"connection_rate_per_ip": -1, "message_rate_per_ip": -1, "recipient_rate_per_ip": -1,
					"checks": []any{
						map[string]any{"check": "lists", "reload_interval": reloadInterval},
						map[string]any{"check": "test_refuse"},
					},
				}},
				"routes": []any{map[string]any{
					"domains": []string{"example.test"},
					"deliver": map[string]any{"target": "maildir", "path": filepath.Join(dir, "mail", "{local}"), "create_mailboxes": true},
				}},
			},
		},
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	app, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		t.Fatal(err)
	}
	n.smtp = app.(*smtpapp.App).Servers["mx"].Addrs()[0].String()
	return n
}

// rcpt opens an SMTP session from the client address src and returns the
// reply to RCPT TO:<to>.
func (n *node) rcpt(src, helo, from, to string) string {
	n.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", n.smtp)
	if err != nil {
		n.t.Fatalf("dial %s from %s: %v", n.smtp, src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	var reply string
	for _, cmd := range []string{"", "EHLO " + helo, "MAIL FROM:<" + from + ">", "RCPT TO:<" + to + ">", "QUIT"} {
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		if reply, err = readReply(r); err != nil {
			n.t.Fatalf("%q: %v", cmd, err)
		}
		if strings.HasPrefix(cmd, "RCPT") {
			return reply
		}
		if !strings.HasPrefix(reply, "2") {
			n.t.Fatalf("%q: %q", cmd, reply)
		}
	}
	return reply
}

// readReply reads one (multiline) SMTP reply and returns its last line.
func readReply(r *bufio.Reader) (string, error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n"), nil
		}
	}
}

// expectRcpt requires the reply to RCPT to start with want.
func (n *node) expectRcpt(src, helo, from, to, want string) {
	n.t.Helper()
	if got := n.rcpt(src, helo, from, to); !strings.HasPrefix(got, want) {
		n.t.Errorf("RCPT TO:<%s> from %s (HELO %s, MAIL FROM:<%s>): %q, want %s", to, src, helo, from, got, want)
	}
}

// api calls an admin API and returns the status and body.
func api(t *testing.T, admin, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if raw, ok := body.([]byte); ok { // sent as it is
		r = bytes.NewReader(raw)
	} else if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, "http://"+admin+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// ok calls the admin API, requires a 200 and decodes the response into v.
func (n *node) ok(method, path string, body, v any) {
	n.t.Helper()
	status, out := api(n.t, n.admin, method, path, body)
	if status != http.StatusOK {
		n.t.Fatalf("%s %s: %d %s", method, path, status, out)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			n.t.Fatalf("%s %s: %v: %s", method, path, err, out)
		}
	}
}

// fails calls the admin API and requires the status and an error
// message containing want.
func (n *node) fails(method, path string, body any, status int, want string) {
	n.t.Helper()
	got, out := api(n.t, n.admin, method, path, body)
	var e struct{ Error string }
	if got != status || json.Unmarshal(out, &e) != nil || !strings.Contains(e.Error, want) {
		n.t.Errorf("%s %s %v: got %d %s, want %d with %q", method, path, body, got, out, status, want)
	}
}

type entry = map[string]string

// TestListsThroughAdminAPI: entries added through the admin API take
// effect at the next RCPT in this process (the reload interval is an
// hour): a block entry refuses with 554 5.7.1, an allow entry skips the
// checks after the lists check, the client's address is looked up before
// the sender, and a removed entry no longer counts. Invalid entries get
// 400 with a message saying what is wrong.
func TestListsThroughAdminAPI(t *testing.T) {
	n := startNode(t, "1h")
	const src, other = "127.0.0.1", "127.0.0.2"
	n.expectRcpt(src, "client.test", "a@sender.test", "u@example.test", "250")
	n.expectRcpt(src, "client.test", "a@sender.test", "refuse@example.test", "550 5.7.0")

	var got lists.Entry
	n.ok("POST", "/smtp/lists/block", entry{"kind": "ip", "value": other, "comment": "spam run"}, &got)
	if got.Kind != "ip" || got.Value != other || got.Comment != "spam run" || time.Since(got.Added) > time.Minute {
		t.Errorf("POST returned %+v", got)
	}
	n.expectRcpt(other, "client.test", "a@sender.test", "u@example.test", "554 5.7.1")
	n.expectRcpt(src, "client.test", "a@sender.test", "u@example.test", "250")

	n.ok("POST", "/smtp/lists/allow", entry{"kind": "sender", "value": "Friend@Sender.test"}, nil)
	before := refuseCalls.Load()
	n.expectRcpt(src, "client.test", "friend@sender.test", "refuse@example.test", "250")
	if calls := refuseCalls.Load() - before; calls != 0 {
		t.Errorf("the check after an allow entry ran %d times", calls)
	}
	// The client's address is looked up before the sender.
	n.expectRcpt(other, "client.test", "friend@sender.test", "u@example.test", "554 5.7.1")

	n.ok("POST", "/smtp/lists/block", entry{"kind": "sender_domain", "value": ".spam.test"}, nil)
	n.ok("POST", "/smtp/lists/block", entry{"kind": "helo", "value": ".bad.test"}, nil)
	n.ok("POST", "/smtp/lists/block", entry{"kind": "recipient", "value": "closed@example.test"}, nil)
	n.ok("POST", "/smtp/lists/allow", entry{"kind": "recipient", "value": "postmaster@example.test"}, nil)
	n.expectRcpt(src, "client.test", "x@mail.spam.test", "u@example.test", "554 5.7.1")
	n.expectRcpt(src, "client.test", "x@spam.test", "u@example.test", "250")
	n.expectRcpt(src, "host.bad.test", "a@sender.test", "u@example.test", "554 5.7.1")
	n.expectRcpt(src, "client.test", "a@sender.test", "closed@example.test", "554 5.7.1")
	n.expectRcpt(src, "host.bad.test", "a@sender.test", "postmaster@example.test", "554 5.7.1") // helo before recipient

	var all lists.Lists
	n.ok("GET", "/smtp/lists", nil, &all)
	if len(all.Allow) != 2 || len(all.Block) != 4 || all.Allow[0].Value != "friend@sender.test" {
		t.Errorf("GET /smtp/lists: %+v", all)
	}
	var block []lists.Entry
	n.ok("GET", "/smtp/lists/block", nil, &block)
	if len(block) != 4 || block[0].Value != other || block[0].Comment != "spam run" {
		t.Errorf("GET /smtp/lists/block: %+v", block)
	}
	// Adding an entry again changes its comment only.
	n.ok("POST", "/smtp/lists/block", entry{"kind": "ip", "value": other, "comment": "still"}, &got)
	if got.Comment != "still" || !got.Added.Equal(block[0].Added) {
		t.Errorf("adding an entry again: %+v, was %+v", got, block[0])
	}

	n.ok("DELETE", "/smtp/lists/block?kind=ip&value="+other, nil, &got)
	if got.Value != other {
		t.Errorf("DELETE returned %+v", got)
	}
	n.expectRcpt(other, "client.test", "a@sender.test", "u@example.test", "250")
	n.expectRcpt(other, "client.test", "a@sender.test", "refuse@example.test", "550 5.7.0")

	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		want         string
	}{
		{"POST", "/smtp/lists/block", entry{"kind": "ip", "value": "127.0.0.0/33"}, 400, `ip "127.0.0.0/33": not an IP address or CIDR network`},
		{"POST", "/smtp/lists/block", entry{"kind": "ip", "value": "127.0.0.1/8"}, 400, "host bits set (the network is 127.0.0.0/8)"},
		{"POST", "/smtp/lists/block", entry{"kind": "client", "value": "127.0.0.1"}, 400, `kind "client": want one of ip, helo, sender, sender_domain, recipient`},
		{"POST", "/smtp/lists/allow", entry{"kind": "sender", "value": "nobody"}, 400, "want local@domain"},
		{"POST", "/smtp/lists/allow", entry{"kind": "sender", "value": "a@b.test", "note": "x"}, 400, `unknown field "note"`},
		{"POST", "/smtp/lists/allow", "not an object", 400, "request body"},
		{"POST", "/smtp/lists/allow", []byte(`{"kind": "ip", "value": "127.0.0.1"} {}`), 400, "more than one object"},
		{"POST", "/smtp/lists/allow", map[string]any{"kind": "ip", "value": "127.0.0.1", "added": "2020-01-01T00:00:00Z"}, 400, "added is set by the server"},
		{"POST", "/smtp/lists/grey", entry{"kind": "ip", "value": "127.0.0.1"}, 404, "the lists are allow and block"},
		{"POST", "/smtp/lists", entry{"kind": "ip", "value": "127.0.0.1"}, 405, "method not allowed"},
		{"PUT", "/smtp/lists/block", nil, 405, "method not allowed"},
		{"DELETE", "/smtp/lists/block?kind=ip&value=127.0.0.9", nil, 404, "ip 127.0.0.9 is not in the block list"},
		{"DELETE", "/smtp/lists/block?kind=ip&value=127.0.0.9/40", nil, 400, "not an IP address"},
	} {
		n.fails(tc.method, tc.path, tc.body, tc.status, tc.want)
	}
	n.ok("GET", "/smtp/lists/block", nil, &block)
	if len(block) != 3 {
		t.Errorf("after the refused changes, the block list has %d entries, want 3: %+v", len(block), block)
	}
}

// TestListsSharedStorage: a second node (a Caddy process of its own on the
// same storage) changes the lists through its admin API; this node sees
// the change after its reload_interval. Changes made on both nodes at
// once are all kept (the storage lock). A list that becomes unreadable
// leaves the last good lists in use, with a warning in the log.
func TestListsSharedStorage(t *testing.T) {
	n := startNode(t, "100ms")
	second := startChild(t, n.storage)
	const src = "127.0.0.3"
	n.expectRcpt(src, "client.test", "a@sender.test", "u@example.test", "250")

	if status, out := api(t, second, "POST", "/smtp/lists/block", entry{"kind": "ip", "value": "127.0.0.0/29"}); status != 200 {
		t.Fatalf("POST to the second node: %d %s", status, out)
	}
	testutil.Eventually(t, 10*time.Second, "the block entry of the second node used here", func() bool {
		return strings.HasPrefix(n.rcpt(src, "client.test", "a@sender.test", "u@example.test"), "554 5.7.1")
	})

	// 2 x 10 additions at once, half through each node.
	var wg sync.WaitGroup
	for i := range 20 {
		admin := n.admin
		if i%2 == 1 {
			admin = second
		}
		wg.Go(func() {
			if status, out := api(t, admin, "POST", "/smtp/lists/allow", entry{"kind": "sender", "value": fmt.Sprintf("u%d@example.test", i)}); status != 200 {
				t.Errorf("POST %d: %d %s", i, status, out)
			}
		})
	}
	wg.Wait()
	var allow []lists.Entry
	n.ok("GET", "/smtp/lists/allow", nil, &allow)
	if len(allow) != 20 {
		t.Errorf("after 20 additions at once the allow list has %d entries: %+v", len(allow), allow)
	}

	// Another node writes an invalid document: this one keeps the last
	// good lists and says so.
	fs := &certmagic.FileStorage{Path: n.storage}
	if err := fs.Store(context.Background(), lists.StorageKey("block"), []byte(`{"entries": [{"kind": "ip", "value": "127.0.0.0/33"}]}`)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "a warning about the invalid list", func() bool {
		b, _ := os.ReadFile(n.log)
		return bytes.Contains(b, []byte("keeping the last good ones")) && bytes.Contains(b, []byte("127.0.0.0/33"))
	})
	n.expectRcpt(src, "client.test", "a@sender.test", "u@example.test", "554 5.7.1")
	if status, out := api(t, n.admin, "GET", "/smtp/lists/block", nil); status != 500 || !bytes.Contains(out, []byte("entry 0")) {
		t.Errorf("GET of the invalid list: %d %s, want 500 naming the entry", status, out)
	}
}

// startChild runs a second Caddy (this test binary) with only an admin API
// on the storage, and returns its admin address.
func startChild(t *testing.T, storage string) string {
	t.Helper()
	admin := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg, err := json.Marshal(map[string]any{
		"admin":   map[string]any{"listen": admin, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": storage},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "child.json")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.StartProcess(t, filepath.Join(filepath.Dir(path), "child.log"), []string{childConfigEnv + "=" + path}, os.Args[0], "-test.run=^$")
	testutil.WaitForPort(t, admin, 30*time.Second)
	return admin
}
