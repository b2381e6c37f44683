package smtpapp_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/pace"
)

// largeMessagesEnv starts a server whose app has the given large_messages
// config and returns a session after EHLO.
func largeMessagesEnv(t *testing.T, large map[string]any) (*testEnv, *dialog) {
	t.Helper()
	e := newTestEnv(t)
	e.load(e.config(map[string]any{
		"large_messages": large,
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0"}},
		}},
	}))
	d := dial(t, addrsOf(runningApp(t), "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	return e, d
}

// largeBody is a message of about n bytes in 76-character lines.
func largeBody(n int) string {
	line := strings.Repeat("0123456789abcdefghij", 4)[:76] + "\r\n"
	return "Subject: large\r\n\r\n" + strings.Repeat(line, n/len(line))
}

// TestLargeMessagePacedAfterSmallOne: right after a small message, the
// bytes of a large one beyond large_messages.threshold come at the rate
// (the time waited is counted), and the message arrives whole.
func TestLargeMessagePacedAfterSmallOne(t *testing.T) {
	const threshold, rate = 64 << 10, 1 << 20
	e, d := largeMessagesEnv(t, map[string]any{"threshold": threshold, "rate": rate})
	if r := d.sendMail("a@sender.test", "small@example.test", "Subject: small\r\n\r\nhello"); !strings.HasPrefix(r, "250") {
		t.Fatalf("small message: %s", r)
	}
	before, metricBefore := pace.Waited(), counter(t, "caddy_smtp_large_message_paced_seconds_total")
	body := largeBody(640 << 10)
	if r := d.sendMail("a@sender.test", "large@example.test", body); !strings.HasPrefix(r, "250") {
		t.Fatalf("large message: %s", r)
	}
	// 576 KiB beyond the threshold at 1 MiB/s, less the limiter's burst:
	// about 0.5 s of waiting; half of it leaves room for the clock.
	want := time.Duration(float64(len(body)-threshold-pace.Chunk) / rate * float64(time.Second) / 2)
	if got := pace.Waited() - before; got < want {
		t.Fatalf("the large message waited %v, want at least %v", got, want)
	}
	if got := counter(t, "caddy_smtp_large_message_paced_seconds_total") - metricBefore; got < want.Seconds() {
		t.Fatalf("large_message_paced_seconds_total grew by %.3f, want at least %.3f", got, want.Seconds())
	}
	files := e.waitMail("example.test", "large", 1)
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), body+"\r\n") {
		t.Fatalf("delivered message of %d bytes does not end with the %d-byte body sent", len(b), len(body))
	}
}

// TestLargeMessagesOff: with large_messages off, a large message right
// after a small one does not wait.
func TestLargeMessagesOff(t *testing.T) {
	_, d := largeMessagesEnv(t, map[string]any{"disabled": true})
	if r := d.sendMail("a@sender.test", "small@example.test", "Subject: small\r\n\r\nhello"); !strings.HasPrefix(r, "250") {
		t.Fatalf("small message: %s", r)
	}
	before := pace.Waited()
	if r := d.sendMail("a@sender.test", "large@example.test", largeBody(4<<20)); !strings.HasPrefix(r, "250") {
		t.Fatalf("large message: %s", r)
	}
	if got := pace.Waited() - before; got != 0 {
		t.Fatalf("the large message waited %v with large_messages off", got)
	}
}

// TestLargeMessagesDefault: without a large_messages block, pacing is on
// with its defaults (1 MiB threshold): a 4 MiB message after a small one
// waits.
func TestLargeMessagesDefault(t *testing.T) {
	_, d := largeMessagesEnv(t, nil)
	if r := d.sendMail("a@sender.test", "small@example.test", "Subject: small\r\n\r\nhello"); !strings.HasPrefix(r, "250") {
		t.Fatalf("small message: %s", r)
	}
	before := pace.Waited()
	if r := d.sendMail("a@sender.test", "large@example.test", largeBody(4<<20)); !strings.HasPrefix(r, "250") {
		t.Fatalf("large message: %s", r)
	}
	if pace.Waited() == before {
		t.Fatal("a 4 MiB message right after a small one did not wait with the default large_messages")
	}
}
