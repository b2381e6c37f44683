package smtpapp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// adminClient talks to Caddy's admin API on a unix socket, as `caddy reload`
// does over TCP.
func adminClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
}

func postLoad(client *http.Client, cfg map[string]any) error {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	resp, err := client.Post("http://localhost/load", "application/json", bytes.NewReader(raw))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /load: %s: %s", resp.Status, body)
	}
	return nil
}

func TestReloadThroughAdminAPIKeepsListenerAndOpenSession(t *testing.T) {
	e := newTestEnv(t)
	sock := filepath.Join(e.dir, "admin.sock")
	cfgWithSize := func(size int) map[string]any {
		return e.config(map[string]any{
			"grace_period": "20s",
			"servers": map[string]any{"mx": map[string]any{
				"listen":           []any{map[string]any{"address": "127.0.0.1:0"}},
				"max_message_size": size,
			}},
		}, func(c map[string]any) {
			c["admin"] = map[string]any{"listen": "unix/" + sock}
		})
	}
	app := e.load(cfgWithSize(1000000))
	addr := addrsOf(app, "mx")[0]

	// A session in the middle of a transaction.
	old := dial(t, addr)
	old.expect("220")
	old.cmd("EHLO client.example", "SIZE 1000000")
	old.cmd("MAIL FROM:<a@sender.example>", "250")
	old.cmd("RCPT TO:<during@example.test>", "250")

	client := adminClient(sock)
	reloaded := make(chan error, 1)
	go func() { reloaded <- postLoad(client, cfgWithSize(2000000)) }()

	// The listener keeps accepting; new sessions soon see the new config.
	deadline := time.Now().Add(15 * time.Second)
	for {
		d := dial(t, addr)
		d.expect("220")
		if strings.Contains(d.cmd("EHLO client.example", "250"), "SIZE 2000000") {
			d.sendMail("a@sender.example", "after@example.test", "Subject: after\r\n\r\nx")
			d.cmd("QUIT", "221")
			break
		}
		d.cmd("QUIT", "221")
		if time.Now().After(deadline) {
			t.Fatal("new config not applied to new sessions")
		}
	}
	e.waitMail("example.test", "after", 1)

	// The open session completes under the old config.
	old.cmd("DATA", "354")
	old.raw("Subject: during\r\n\r\nbody\r\n.\r\n")
	old.expect("250 2.0.0")
	old.cmd("QUIT", "221")
	e.waitMail("example.test", "during", 1)

	select {
	case err := <-reloaded:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("reload did not finish after the open session ended")
	}
	if got := addrsOf(runningApp(t), "mx")[0]; got != addr {
		t.Fatalf("listener moved from %s to %s", addr, got)
	}
}

func TestStopDrainsThenClosesIdleSessions(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"grace_period": "1s",
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0"}},
		}},
	}))
	addr := addrsOf(app, "mx")[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")

	stopped := make(chan error, 1)
	go func() { stopped <- caddy.Stop() }()

	// While draining, a new transaction is refused with 421 (retry later)...
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := d.cmd("MAIL FROM:<a@sender.example>", "")
		if strings.HasPrefix(r, "421 4.3.2") {
			break
		}
		d.cmd("RSET", "250")
		if time.Now().After(deadline) {
			t.Fatalf("no 421 while stopping; last reply %q", r)
		}
	}
	// ...and the connection is closed when the grace period is over.
	_ = d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := d.r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after the grace period")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection not closed by the grace period")
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not return after the grace period")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepting after stop")
	}
}
