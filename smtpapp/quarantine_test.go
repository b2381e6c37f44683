package smtpapp_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpadmin"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/lists"
	. "github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// quarantiner is a test message check that quarantines every message
// whose header section contains "quarantine-me".
type quarantiner struct{}

func (quarantiner) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.checks.test_quarantine", New: func() caddy.Module { return new(quarantiner) }}
}

func (quarantiner) StartMessage(*MessageInput) MessageJudge { return &quarantineJudge{} }

// quarantineJudge keeps the start of the message as the tagger's judge
// does (checkorder_test.go).
type quarantineJudge struct{ taggerJudge }

func (j *quarantineJudge) Finish(context.Context) Verdict {
	head, _, _ := strings.Cut(j.head.String(), "\r\n\r\n")
	if !strings.Contains(head, "quarantine-me") {
		return Accept()
	}
	return Verdict{Result: VerdictQuarantine, Reason: "the subject asked for it", Note: "score 9.5"}
}

func init() { caddy.RegisterModule(quarantiner{}) }

// startQuarantineEnv runs a gateway whose mx server quarantines with the
// test check and delivers example.test to maildirs (and slow.test to a
// relay that is down), with the admin API on a unix socket; app adds
// options of the smtp app.
func startQuarantineEnv(t *testing.T, app map[string]any) *adminEnv {
	t.Helper()
	e := newTestEnv(t)
	a := &adminEnv{testEnv: e, sock: filepath.Join(e.dir, "admin.sock")}
	app["servers"] = map[string]any{"mx": map[string]any{
		"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
		"checks": []any{map[string]any{"check": "test_quarantine"}},
	}}
	app["routes"] = []any{
		map[string]any{"domains": []string{"example.test"}, "deliver": map[string]any{"target": "maildir",
			"path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true}},
		map[string]any{"domains": []string{"slow.test"}, "deliver": map[string]any{"target": "relay",
			"hosts": []string{fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))}}},
	}
	running := e.load(e.config(app, func(c map[string]any) {
		c["admin"] = map[string]any{"listen": "unix/" + a.sock, "config": map[string]any{"persist": false}}
	}))
	a.smtp = addrsOf(running, "mx")[0]
	a.client = adminClient(a.sock)
	return a
}

// send submits a message and returns its queue ID.
func (a *adminEnv) send(from, to, subject string) string {
	a.t.Helper()
	d := dial(a.t, a.smtp)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	reply := d.sendMail(from, to, "Subject: "+subject+"\r\nDate: Thu, 3 Dec 2026 10:00:00 +0000\r\n\r\nbody of "+subject)
	d.cmd("QUIT", "221")
	_, id, ok := strings.Cut(reply, "queued as ")
	if !strings.HasPrefix(reply, "250") || !ok {
		a.t.Fatalf("submission: %q", reply)
	}
	return strings.TrimSpace(id)
}

// quarantine lists the quarantine with the query given.
func (a *adminEnv) quarantine(query string) smtpadmin.QuarantineList {
	a.t.Helper()
	var l smtpadmin.QuarantineList
	a.ok(http.MethodGet, "/smtp/quarantine"+query, &l)
	return l
}

func ids(l smtpadmin.QuarantineList) string {
	var out []string
	for _, m := range l.Messages {
		out = append(out, m.ID)
	}
	return strings.Join(out, " ")
}

// TestQuarantineAdminAPI: the quarantine endpoints on messages that a
// check quarantined: the list (newest first, decoded subject, reason,
// results, paging, search), the view, release (delivered to the original
// recipient), delete (gone, no DSN), allow-sender for an address and for a
// domain (in the allow list, then delivered), and 404 for what is not
// quarantined.
func TestQuarantineAdminAPI(t *testing.T) {
	a := startQuarantineEnv(t, map[string]any{})
	m1 := a.send("friend@partner.test", "user@example.test", "=?utf-8?q?Gr=C3=BC=C3=9Fe_quarantine-me?=")
	m2 := a.send("spam@example.test", "other@example.test", "cheap quarantine-me offer")
	a.send("friend@partner.test", "user@example.test", "nothing special")
	deferred := a.send("friend@partner.test", "x@slow.test", "nothing special")
	a.waitMail("example.test", "user", 1)
	m3 := a.send("Boss@Partner2.test", "boss@example.test", "quarantine-me 3")
	m4 := a.send("news@lists.partner3.test", "news@example.test", "quarantine-me 4")
	null := a.send("", "bounces@example.test", "quarantine-me bounce")

	all := a.quarantine("")
	if all.Total != 5 || ids(all) != strings.Join([]string{null, m4, m3, m2, m1}, " ") {
		t.Fatalf("list: total %d, ids %s; want %s %s %s %s %s", all.Total, ids(all), null, m4, m3, m2, m1)
	}
	got := all.Messages[4]
	if got.Subject != "Grüße quarantine-me" || got.From != "friend@partner.test" || len(got.Recipients) != 1 ||
		got.Recipients[0] != "user@example.test" || got.Check != "test_quarantine" || got.Reason != "the subject asked for it" ||
		got.Results != "test_quarantine=score 9.5" || got.Date != "Thu, 3 Dec 2026 10:00:00 +0000" || got.Quarantined.IsZero() {
		t.Errorf("listed message: %+v", got)
	}
	if l := a.quarantine("?limit=2&offset=1"); l.Total != 5 || ids(l) != m4+" "+m3 {
		t.Errorf("page 2 of 2: total %d, %s; want %s %s", l.Total, ids(l), m4, m3)
	}
	if l := a.quarantine("?q=SPAM@example"); l.Total != 1 || ids(l) != m2 {
		t.Errorf("search on the sender: %+v", l)
	}
	if l := a.quarantine("?q=grüße"); ids(l) != m1 {
		t.Errorf("search on the decoded subject: %+v", l)
	}
	if l := a.quarantine("?q=boss@example"); ids(l) != m3 {
		t.Errorf("search on the recipient: %+v", l)
	}
	a.fails(http.MethodGet, "/smtp/quarantine?limit=0", http.StatusBadRequest, "limit")

	var view smtpadmin.QuarantineDetail
	a.ok(http.MethodGet, "/smtp/quarantine/"+m2+"?body=1", &view)
	if view.Subject != "cheap quarantine-me offer" || view.Quarantine == nil || view.Quarantine.Check != "test_quarantine" ||
		!strings.Contains(view.Headers, "Subject: cheap quarantine-me offer\r\n") || view.Body != "body of cheap quarantine-me offer\r\n" {
		t.Errorf("view: %+v", view)
	}

	a.fails(http.MethodGet, "/smtp/quarantine/"+deferred, http.StatusNotFound, "is not quarantined")
	a.fails(http.MethodDelete, "/smtp/quarantine/"+deferred, http.StatusNotFound, "is not quarantined")
	a.fails(http.MethodPost, "/smtp/quarantine/"+deferred+"/release", http.StatusNotFound, "is not quarantined")
	a.fails(http.MethodPost, "/smtp/quarantine/NOSUCHID/allow-sender", http.StatusNotFound, "no such message")
	if _, ok := a.list()[deferred]; !ok {
		t.Fatal("a delete of the quarantine removed a message that is not quarantined")
	}
	a.ok(http.MethodDelete, "/smtp/queue/"+deferred, nil)

	// A release keeps the quarantine as history; the message is no longer
	// in the quarantine.
	slow := a.send("friend@partner.test", "y@slow.test", "quarantine-me slow")
	a.ok(http.MethodPost, "/smtp/quarantine/"+slow+"/release", nil)
	var released smtpadmin.MessageDetail
	a.ok(http.MethodGet, "/smtp/queue/"+slow, &released)
	if released.State == "quarantined" || released.Held || released.Quarantine == nil || released.Quarantine.Released.IsZero() {
		t.Errorf("released message: state %s, held %v, quarantine %+v", released.State, released.Held, released.Quarantine)
	}
	a.fails(http.MethodGet, "/smtp/quarantine/"+slow, http.StatusNotFound, "is not quarantined")
	a.ok(http.MethodDelete, "/smtp/queue/"+slow, nil)

	a.ok(http.MethodDelete, "/smtp/quarantine/"+m2, nil)
	a.ok(http.MethodPost, "/smtp/quarantine/"+m1+"/release", nil)
	a.waitMail("example.test", "user", 2) // plain and m1
	a.fails(http.MethodPost, "/smtp/quarantine/"+m1+"/release", http.StatusNotFound, "")

	var res smtpadmin.QuarantineResult
	a.ok(http.MethodPost, "/smtp/quarantine/"+m3+"/allow-sender", &res)
	if !res.Released || res.Allowed == nil || res.Allowed.Kind != lists.KindSender || res.Allowed.Value != "boss@partner2.test" {
		t.Errorf("allow-sender: %+v", res)
	}
	a.ok(http.MethodPost, "/smtp/quarantine/"+m4+"/allow-sender?domain=1", &res)
	if res.Allowed == nil || res.Allowed.Kind != lists.KindSenderDomain || res.Allowed.Value != "lists.partner3.test" {
		t.Errorf("allow-sender?domain=1: %+v", res)
	}
	a.waitMail("example.test", "boss", 1)
	a.waitMail("example.test", "news", 1)
	var allow lists.Lists
	a.ok(http.MethodGet, "/smtp/lists", &allow)
	if len(allow.Allow) != 2 || allow.Allow[0].Value != "boss@partner2.test" || allow.Allow[1].Value != "lists.partner3.test" ||
		!strings.Contains(allow.Allow[0].Comment, m3) {
		t.Errorf("allow list: %+v", allow.Allow)
	}

	a.fails(http.MethodPost, "/smtp/quarantine/"+null+"/allow-sender", http.StatusConflict, "null sender")
	a.ok(http.MethodDelete, "/smtp/quarantine/"+null, nil)
	if l := a.quarantine(""); l.Total != 0 {
		t.Errorf("quarantine after the actions: %+v", l)
	}
	eventually(t, "an empty queue", func() bool { return len(a.list()) == 0 })
	if files := a.mailFiles("example.test", "other"); len(files) != 0 {
		t.Error("the deleted message was delivered")
	}
	if files := a.mailFiles("example.test", "spam"); len(files) != 0 {
		t.Error("the sender of the deleted message got a DSN")
	}
}

// TestQuarantineRetention: with a short quarantine_retention, a
// quarantined message is listed, then deleted by the queue without being
// delivered and without a DSN.
func TestQuarantineRetention(t *testing.T) {
	a := startQuarantineEnv(t, map[string]any{"quarantine_retention": "1s"})
	before := counter(t, "caddy_smtp_quarantine_expired_total")
	id := a.send("s@sender.test", "user@example.test", "quarantine-me")
	if l := a.quarantine(""); ids(l) != id {
		t.Fatalf("quarantine: %+v", l)
	}
	eventually(t, "the quarantined message deleted", func() bool { return len(a.list()) == 0 })
	if got := counter(t, "caddy_smtp_quarantine_expired_total"); got != before+1 {
		t.Errorf("caddy_smtp_quarantine_expired_total went from %v to %v, want +1", before, got)
	}
	entries, err := os.ReadDir(filepath.Join(a.mail, "example.test", "user", "new"))
	if err == nil && len(entries) != 0 {
		t.Fatal("the quarantined message was delivered")
	}
}
