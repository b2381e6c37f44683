package lmtp_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddypki"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	_ "github.com/caddy-smtp/caddy-smtp/modules/standard"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// gateway is a running smtp app whose route for example.test delivers
// over LMTP, and whose route for sender.test (where the DSNs go) writes a
// Maildir.
type gateway struct {
	t     *testing.T
	addr  string
	queue *queue.Queue
	dsns  string // the Maildir of the senders at sender.test
}

// startGateway runs the smtp app with deliver as the target of
// example.test. Retries wait an hour: a test that wants one flushes.
func startGateway(t *testing.T, deliver map[string]any) *gateway {
	t.Helper()
	dir := t.TempDir()
	deliver["target"] = "lmtp"
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": testutil.StorageDir(t)},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps": map[string]any{
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"smtp": map[string]any{
				"hostname": "mx.example.internal",
				"queue":    map[string]any{"path": filepath.Join(dir, "queue"), "retry_initial": "1h"},
				"servers":  map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
				"routes": []any{
					map[string]any{"domains": []string{"example.test"}, "deliver": deliver},
					map[string]any{"domains": []string{"sender.test"}, "deliver": map[string]any{
						"target": "maildir", "path": filepath.Join(dir, "dsn"), "create_mailboxes": true}},
				},
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
	mod, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		t.Fatal(err)
	}
	app := mod.(*smtpapp.App)
	return &gateway{t: t, addr: app.Servers["mx"].Addrs()[0].String(), queue: app.RunningQueue(), dsns: filepath.Join(dir, "dsn")}
}

// send hands a message to the gateway over SMTP and returns its queue ID.
func (g *gateway) send(subject string, rcpts ...string) string {
	g.t.Helper()
	c, err := smtp.Dial(g.addr)
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.sender.test"); err != nil {
		g.t.Fatal(err)
	}
	if err := c.Mail("sender@sender.test", nil); err != nil {
		g.t.Fatal(err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			g.t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		g.t.Fatal(err)
	}
	msg := "From: <sender@sender.test>\r\nTo: <alice@example.test>\r\nSubject: " + subject +
		"\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <" + subject + "@sender.test>\r\n\r\nHello " + subject + ".\r\n"
	if _, err := w.Write([]byte(msg)); err != nil {
		g.t.Fatal(err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		g.t.Fatal(err)
	}
	_ = c.Quit()
	fields := strings.Fields(resp.StatusText)
	return fields[len(fields)-1]
}

// dsnsTo returns the DSNs delivered to sender@sender.test.
func (g *gateway) dsnsTo() []string { return readMaildir(g.t, g.dsns) }

// withSubject returns the messages that carry subject.
func withSubject(msgs []string, subject string) []string {
	var out []string
	for _, m := range msgs {
		if strings.Contains(m, "\nSubject: "+subject+"\r\n") || strings.Contains(m, "\nSubject: "+subject+"\n") {
			out = append(out, m)
		}
	}
	return out
}

// TestDeliverToDovecot sends mail through the gateway to a real Dovecot,
// on its unix socket, on TCP and on TCP with verified STARTTLS: a message for alice and bob lands in both
// Maildirs; in a message for alice and an unknown user, alice gets hers
// and the sender gets a DSN with Dovecot's 550 (at RCPT) for the other;
// and a recipient Dovecot refuses after the data (552, quota) bounces
// alone.
func TestDeliverToDovecot(t *testing.T) {
	ca := testutil.NewCA(t)
	cert := ca.Issue(t, "127.0.0.1")
	for _, tc := range []struct {
		name           string
		unix, starttls bool
	}{
		{"unix", true, false},
		{"tcp", false, false},
		{"tcp with STARTTLS, verified", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deliver := map[string]any{}
			var d *dovecot
			switch {
			case tc.unix:
				d = startDovecot(t, nil)
				deliver["address"] = "unix/" + d.socket
			case tc.starttls:
				d = startDovecot(t, &cert)
				deliver["address"], deliver["tls"], deliver["ca_file"] = d.tcp, "verify", ca.PEMFile(t)
			default:
				d = startDovecot(t, nil)
				deliver["address"] = d.tcp
			}
			g := startGateway(t, deliver)

			g.send("both", "alice@example.test", "bob@example.test")
			for _, u := range []string{"alice", "bob"} {
				testutil.Eventually(t, 20*time.Second, "the message in "+u+"'s Maildir", func() bool {
					return len(withSubject(d.mail(u), "both")) == 1
				})
				m := withSubject(d.mail(u), "both")[0]
				if !strings.HasPrefix(m, "Return-Path: <sender@sender.test>") || !strings.Contains(m, "with LMTP") ||
					!strings.Contains(m, "Hello both.") {
					t.Errorf("%s's message as Dovecot stored it:\n%s", u, m)
				}
				if n := strings.Count(m, "Return-Path:"); n != 1 {
					t.Errorf("%s's message has %d Return-Path fields (the gateway must add none):\n%s", u, n, m)
				}
			}

			id := g.send("unknown", "alice@example.test", "nobody@example.test")
			testutil.Eventually(t, 20*time.Second, "a DSN for nobody", func() bool { return len(g.dsnsTo()) == 1 })
			dsn := g.dsnsTo()[0]
			for _, want := range []string{"Final-Recipient: rfc822; nobody@example.test", "Action: failed", "Status: 5.1.1", "User doesn't exist"} {
				if !strings.Contains(dsn, want) {
					t.Errorf("the DSN lacks %q:\n%s", want, dsn)
				}
			}
			if strings.Contains(dsn, "alice@example.test;") {
				t.Errorf("the DSN reports on alice, who was delivered:\n%s", dsn)
			}
			if got := withSubject(d.mail("alice"), "unknown"); len(got) != 1 {
				t.Errorf("alice has %d copies of the message with an unknown co-recipient, want 1", len(got))
			}
			if _, err := g.queue.Snapshot(id); err == nil {
				t.Errorf("message %s is still queued after every recipient was delivered or failed", id)
			}

			// carol is accepted at RCPT and refused after the data, in the
			// first of the two replies: bob's copy is kept, carol bounces.
			g.send("quota", "carol@example.test", "bob@example.test")
			testutil.Eventually(t, 20*time.Second, "a DSN for carol", func() bool { return len(g.dsnsTo()) == 2 })
			testutil.Eventually(t, 20*time.Second, "bob's copy", func() bool { return len(withSubject(d.mail("bob"), "quota")) == 1 })
			quota := withSubject(g.dsnsTo(), "quota")
			if len(quota) != 1 {
				t.Fatalf("DSNs about the message for carol: %q", g.dsnsTo())
			}
			for _, want := range []string{"Final-Recipient: rfc822; carol@example.test", "Action: failed", "Status: 5.2.2", "552 5.2.2", "Quota exceeded"} {
				if !strings.Contains(quota[0], want) {
					t.Errorf("carol's DSN lacks %q:\n%s", want, quota[0])
				}
			}
			if strings.Contains(quota[0], "bob@example.test") {
				t.Errorf("carol's DSN reports on bob, who was delivered:\n%s", quota[0])
			}
		})
	}
}

// TestDovecotDown: while Dovecot is stopped the message is deferred, and
// it is delivered once Dovecot runs again.
func TestDovecotDown(t *testing.T) {
	d := startDovecot(t, nil)
	g := startGateway(t, map[string]any{"address": "unix/" + d.socket})
	d.stop()

	id := g.send("later", "alice@example.test")
	var snap queue.Snapshot
	testutil.Eventually(t, 20*time.Second, "the message deferred", func() bool {
		var err error
		snap, err = g.queue.Snapshot(id)
		return err == nil && snap.State == "deferred"
	})
	if !strings.Contains(snap.LastError, "451 4.4.1") || len(snap.Recipients) != 1 || snap.Recipients[0].Status != "pending" {
		t.Errorf("deferred message: %+v", snap)
	}
	if len(g.dsnsTo()) != 0 {
		t.Errorf("a DSN was sent for a temporary failure: %q", g.dsnsTo())
	}

	d.start()
	if _, err := g.queue.Flush(id); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the message in alice's Maildir", func() bool {
		return len(withSubject(d.mail("alice"), "later")) == 1
	})
}

// TestDovecotDefersOneRecipient: a 4xx in the replies after the data
// (Dovecot told to answer a full quota with 452) defers only that
// recipient; the other is delivered, and no DSN goes out.
func TestDovecotDefersOneRecipient(t *testing.T) {
	d := startDovecot(t, nil, "quota_full_tempfail = yes")
	g := startGateway(t, map[string]any{"address": "unix/" + d.socket})

	id := g.send("tempquota", "carol@example.test", "bob@example.test")
	var snap queue.Snapshot
	testutil.Eventually(t, 20*time.Second, "the message deferred for carol", func() bool {
		var err error
		snap, err = g.queue.Snapshot(id)
		return err == nil && snap.State == "deferred"
	})
	status := map[string]queue.RecipientSnapshot{}
	for _, r := range snap.Recipients {
		status[r.Addr] = r
	}
	if c := status["carol@example.test"]; c.Status != "pending" || !strings.HasPrefix(c.LastReply, "452 4.2.2") {
		t.Errorf("carol: %+v, want pending after Dovecot's 452", c)
	}
	if b := status["bob@example.test"]; b.Status != "delivered" {
		t.Errorf("bob: %+v, want delivered", b)
	}
	if got := withSubject(d.mail("bob"), "tempquota"); len(got) != 1 {
		t.Errorf("bob has %d copies, want 1", len(got))
	}
	if len(g.dsnsTo()) != 0 {
		t.Errorf("a DSN was sent for a temporary failure: %q", g.dsnsTo())
	}
}
