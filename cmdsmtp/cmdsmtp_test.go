package cmdsmtp

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                              "0s",
		45 * time.Second:               "45s",
		3*time.Minute + 20*time.Second: "3m20s",
		2*time.Hour + 5*time.Minute:    "2h05m",
		76 * time.Hour:                 "3d04h",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestMessage(t *testing.T) {
	o := &sendOptions{from: "a@example.test", to: []string{"b@example.test", "c@example.test"},
		subject: "Grüße", body: "line 1\nline 2\r\nbare\rcr", helo: "client.example"}
	msg := string(o.message(time.Date(2026, 11, 28, 11, 0, 0, 0, time.UTC)))
	for _, want := range []string{
		"From: <a@example.test>\r\n",
		"To: <b@example.test>, <c@example.test>\r\n",
		"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n",
		"Date: Sat, 28 Nov 2026 11:00:00 +0000\r\n",
		"@client.example>\r\n",
		"Content-Transfer-Encoding: 7bit\r\n\r\nline 1\r\nline 2\r\nbare\r\ncr\r\n",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message does not contain %q:\n%s", want, msg)
		}
	}
	if strings.Count(msg, "\n") != strings.Count(msg, "\r\n") || strings.Count(msg, "\r") != strings.Count(msg, "\r\n") {
		t.Errorf("bare CR or LF in %q", msg)
	}
}

func TestWriteList(t *testing.T) {
	now := time.Now()
	var buf bytes.Buffer
	writeList(&buf, nil, now)
	if !strings.Contains(buf.String(), "empty") {
		t.Fatalf("empty list: %q", buf.String())
	}
	buf.Reset()
	writeList(&buf, []queue.Snapshot{{
		ID: "ID1", State: queue.StateDeferred, AgeSeconds: 90, Attempts: 2, NextAttempt: now.Add(time.Hour),
		Size: 2048, From: "", LastError: "451 4.4.1\nrefused",
		Recipients: []queue.RecipientSnapshot{{Addr: "a@x.test", Status: "pending"}, {Addr: "b@x.test", Status: "pending"},
			{Addr: "c@x.test", Status: "delivered"}},
	}}, now)
	out := buf.String()
	for _, want := range []string{"ID1", "deferred", "1m30s", "in 1h00m", "2.0 KiB", "<>", "a@x.test (+1) [2/3 pending]", "451 4.4.1 refused", "1 message(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("list does not contain %q:\n%s", want, out)
		}
	}
}
