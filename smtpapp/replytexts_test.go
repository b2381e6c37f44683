package smtpapp_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// TestDeliveryErrorTexts: what the queue records for a failed attempt
// (shown by the admin API and quoted in DSNs) is one short line that says
// what happened, without addresses, DNS servers or Go error chains; the
// delivery log line keeps the whole chain.
func TestDeliveryErrorTexts(t *testing.T) {
	ns := testdns.Start(t)
	port := freeSharedPort(t, "127.0.0.5", "127.0.0.6")
	ns.AddMX("refused.test", 10, "mx1.refused.test")
	ns.AddMX("refused.test", 20, "mx2.refused.test")
	ns.AddA("mx1.refused.test", "127.0.0.5") // nothing listens on either
	ns.AddA("mx2.refused.test", "127.0.0.6")
	ns.SetRcode("servfail.test", dns.TypeMX, dns.RcodeServerFailure)
	dead := freePort(t)

	e := newTestEnv(t)
	logFile := filepath.Join(t.TempDir(), "log.json")
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
		"routes": []any{
			map[string]any{"domains": []string{"example.test"}, "deliver": map[string]any{"target": "relay", "hosts": []string{"127.0.0.1:" + strconv.Itoa(dead)}}},
			map[string]any{"domains": []string{"sender.test"}, "deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true}},
		},
		"outbound": map[string]any{"target": "mx", "resolvers": []string{ns.Addr()}, "port": port, "connect_timeout": "2s"},
		"queue":    map[string]any{"retry_initial": "1h", "delay_warning": "0s"},
	}, logTo(logFile, "INFO")))
	for _, rcpt := range []string{"a@refused.test", "b@servfail.test", "c@example.test"} {
		enqueue(t, app, "s@sender.test", rcpt)
	}
	want := map[string]string{
		"a@refused.test":  "451 4.4.1 cannot deliver to refused.test: connection refused (mx1.refused.test, mx2.refused.test)",
		"b@servfail.test": "451 4.4.3 DNS lookup of MX of servfail.test failed (SERVFAIL)",
		"c@example.test":  "451 4.4.1 relay host not reachable: connection refused",
	}
	got := map[string]string{}
	eventually(t, "one attempt each", func() bool {
		for _, m := range app.TestQueue().Messages() {
			if r := m.Recipients[0]; m.Attempts > 0 {
				got[r.Addr] = r.LastReply
			}
		}
		return len(got) == len(want)
	})
	for rcpt, w := range want {
		if got[rcpt] != w {
			t.Errorf("%s: last reply %q, want %q", rcpt, got[rcpt], w)
		}
	}
	// The log has the details the reply leaves out. (The delay DSNs to
	// s@sender.test have delivery lines of their own, in any order with
	// these: only the three recipients' lines count.)
	attempts := func() []map[string]any {
		var out []map[string]any
		for _, l := range readLog(t, logFile, "delivery") {
			if rcpt, _ := l["rcpt"].(string); want[rcpt] != "" {
				out = append(out, l)
			}
		}
		return out
	}
	eventually(t, "delivery log lines", func() bool { return len(attempts()) >= 3 })
	for _, l := range attempts() {
		errText, _ := l["error"].(string)
		if l["status"] != "deferred" || !strings.Contains(errText, "127.0.0.") && !strings.Contains(errText, "SERVFAIL") {
			t.Errorf("delivery log line for %v: status %v, error %q (want the whole chain)", l["rcpt"], l["status"], errText)
		}
		if l["reply"] != want[l["rcpt"].(string)] {
			t.Errorf("delivery log line for %v: reply %v", l["rcpt"], l["reply"])
		}
	}
}

// enqueue commits a message for rcpt straight into the queue, as a
// session that accepted it would.
func enqueue(t *testing.T, app interface{ TestQueue() *queue.Queue }, from, rcpt string) {
	t.Helper()
	id := queue.NewID()
	w, err := app.TestQueue().Create(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Subject: to " + rcpt + "\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := app.TestQueue().Commit(w, &queue.Message{From: from, Arrived: time.Now(), Recipients: []*queue.Recipient{{Addr: rcpt}}}); err != nil {
		t.Fatal(err)
	}
}
