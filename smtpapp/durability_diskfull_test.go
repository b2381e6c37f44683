package smtpapp_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
)

// mountTmpfs mounts a tmpfs of the given size on a new directory and
// unmounts it when the test ends. It needs root (CI runs as root): the test
// is skipped without it, and fails under CI=true.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	skip := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("disk-full test cannot run under CI: %s", why)
		}
		t.Skipf("disk-full test skipped: %s", why)
	}
	if os.Geteuid() != 0 {
		skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		skip(fmt.Sprintf("mount -t tmpfs failed: %v: %s", err, out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// gauge reads a gauge from Caddy's metrics registry.
func gauge(t *testing.T, name string) float64 {
	t.Helper()
	return metricValue(t, name, func(m *dto.Metric) float64 { return m.GetGauge().GetValue() })
}

// counter reads a counter without labels from the running config's
// metrics registry.
func counter(t *testing.T, name string) float64 {
	t.Helper()
	return metricValue(t, name, func(m *dto.Metric) float64 { return m.GetCounter().GetValue() })
}

// metricValue reads the first series of a metric family.
func metricValue(t *testing.T, name string, value func(*dto.Metric) float64) float64 {
	t.Helper()
	ctx := caddy.ActiveContext()
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return value(f.GetMetric()[0])
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// diskFullFigures is what a disk-full run counted.
type diskFullFigures struct {
	accepted, refused, acceptedAfter, delivered, duplicates int
	codes                                                   map[string]int
}

// trySend runs one transaction and returns the reply that ended it: the
// 250 after DATA, or the refusal at MAIL or DATA, prefixed with "MAIL ".
func trySend(t *testing.T, addr, tag string, body string) string {
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	defer d.send("QUIT")
	d.send("MAIL FROM:<sender@client.example>")
	if r := d.reply(); !strings.HasPrefix(r, "250") {
		return "MAIL " + r
	}
	d.cmd("RCPT TO:<user@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: " + tag + "\r\n\r\n" + body + "\r\n.\r\n")
	return d.reply()
}

// TestDurabilityDiskFull puts the spool on a 16 MiB tmpfs and the next hop
// down: new mail fills the spool while retries append state, and once the
// reserve is reached every new message is refused with 452 4.3.1 (never a
// 5xx). The next hop comes back: every accepted message is delivered
// exactly once, the spool reclaims its space, new mail is accepted again
// and nothing is delivered twice after a restart on the same spool.
// Large messages fill the spool with bodies; small ones leave many done
// records to write once the next hop is back.
func TestDurabilityDiskFull(t *testing.T) {
	for _, store := range []string{"segments", "files"} {
		for _, size := range []struct {
			name  string
			lines int
		}{{"200KB", 200}, {"20KB", 20}} {
			t.Run(store+"/"+size.name, func(t *testing.T) {
				f := runDiskFull(t, store, size.lines)
				t.Logf("%s %s: accepted %d, refused %d %v, accepted after recovery %d, delivered %d, duplicates after restart %d",
					store, size.name, f.accepted, f.refused, f.codes, f.acceptedAfter, f.delivered, f.duplicates)
			})
		}
	}
}

func runDiskFull(t *testing.T, store string, lines int) diskFullFigures {
	spool := mountTmpfs(t, "16m")
	e := newTestEnv(t)
	e.spool = spool
	r := startReceiver(t, receiverOpts{})
	var down atomic.Bool
	down.Store(true)
	r.dataErr = func() error {
		if down.Load() {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "down for maintenance"}
		}
		return nil
	}
	cfg := e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen":                 []any{map[string]any{"address": "127.0.0.1:0"}},
			"connection_rate_per_ip": -1, "message_rate_per_ip": -1, "recipient_rate_per_ip": -1,
		}},
		"queue": map[string]any{"path": spool, "store": store, "retry_initial": "50ms", "retry_max": "200ms"},
		"routes": []any{map[string]any{"domains": []string{"example.test"},
			"deliver": map[string]any{"target": "relay", "hosts": []string{r.addr}}}},
	})
	app := e.load(cfg)
	addr := addrsOf(app, "mx")[0]
	body := strings.Repeat(strings.Repeat("x", 998)+"\r\n", lines)

	f := diskFullFigures{codes: map[string]int{}}
	sent := map[string]bool{}
	for i := 0; f.refused < 3; i++ {
		if i > 3000 {
			t.Fatalf("still accepting after %d messages on a 16 MiB spool", i)
		}
		tag := fmt.Sprintf("m-%d", i)
		reply := trySend(t, addr, tag, body)
		switch {
		case strings.HasPrefix(reply, "250"):
			f.accepted++
			sent[tag] = true
		case strings.HasPrefix(reply, "452 4.3.1"):
			f.refused++
			f.codes["DATA 452 4.3.1"]++
		case strings.HasPrefix(reply, "MAIL 452 4.3.1"):
			f.refused++
			f.codes["MAIL 452 4.3.1"]++
		default:
			t.Fatalf("message %d refused with %q, want 452 4.3.1", i, reply)
		}
	}
	if got := gauge(t, "caddy_smtp_queue_storage_low"); got != 1 {
		t.Errorf("caddy_smtp_queue_storage_low = %v while refusing, want 1", got)
	}
	if f.accepted == 0 {
		t.Fatal("nothing accepted before the spool was full")
	}
	// The outage goes on while the spool is full: the messages are
	// retried (each retry appends its state).
	deferred := func() float64 { return app.TestCounter("deliveries", "deferred", "plaintext", "opportunistic") }
	target := deferred() + float64(f.accepted)
	eventually(t, "retries while the spool is full", func() bool { return deferred() >= target })
	if reply := trySend(t, addr, "still-full", body); !strings.HasPrefix(reply, "MAIL 452 4.3.1") {
		t.Fatalf("after the retries got %q, want 452 4.3.1 at MAIL", reply)
	}
	f.refused++
	f.codes["MAIL 452 4.3.1"]++

	down.Store(false)
	r.waitMessages(f.accepted)
	eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })
	eventually(t, "storage no longer low", func() bool { return !app.TestQueue().StorageLow() })
	if got := gauge(t, "caddy_smtp_queue_storage_low"); got != 0 {
		t.Errorf("caddy_smtp_queue_storage_low = %v after recovery, want 0", got)
	}
	for i := 0; i < 5; i++ {
		tag := fmt.Sprintf("after-%d", i)
		if reply := trySend(t, addr, tag, body); !strings.HasPrefix(reply, "250") {
			t.Fatalf("after recovery message %d got %q, want 250", i, reply)
		}
		f.acceptedAfter++
		sent[tag] = true
	}
	r.waitMessages(f.accepted + f.acceptedAfter)
	eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })

	// A new app instance on the same spool: nothing may come back.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	waitSpoolFree(t, spool)
	app = e.load(cfg)
	if n := app.TestQueue().Len(); n != 0 {
		t.Errorf("%d messages loaded after the restart, want 0 (they would be delivered again)", n)
	}
	if reply := trySend(t, addrsOf(app, "mx")[0], "after-restart", body); !strings.HasPrefix(reply, "250") {
		t.Fatalf("after the restart got %q, want 250", reply)
	}
	sent["after-restart"] = true
	msgs := r.waitMessages(len(sent))
	seen := map[string]int{}
	for _, m := range msgs {
		tag := m.header("Subject")
		seen[tag]++
		if seen[tag] > 1 {
			f.duplicates++
		}
	}
	for tag := range sent {
		if seen[tag] != 1 {
			t.Errorf("%s delivered %d times, want 1", tag, seen[tag])
		}
	}
	f.delivered = len(msgs)
	return f
}
