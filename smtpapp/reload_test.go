package smtpapp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
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

	// The reload does not wait for open sessions: the new config serves
	// new connections, the old one finishes its sessions in the background.
	client := adminClient(sock)
	if err := postLoad(client, cfgWithSize(2000000)); err != nil {
		t.Fatal(err)
	}

	// The listener keeps accepting, on the same port; new sessions see the
	// new config.
	if got := addrsOf(runningApp(t), "mx")[0]; got != addr {
		t.Fatalf("listener moved from %s to %s", addr, got)
	}
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "SIZE 2000000")
	d.sendMail("a@sender.example", "after@example.test", "Subject: after\r\n\r\nx")
	d.cmd("QUIT", "221")
	e.waitMail("example.test", "after", 1)

	// The open session completes its transaction, and more, under the old
	// config.
	old.cmd("DATA", "354")
	old.raw("Subject: during\r\n\r\nbody\r\n.\r\n")
	old.expect("250 2.0.0")
	if r := old.sendMail("a@sender.example", "during@example.test", "Subject: again\r\n\r\nx"); !strings.HasPrefix(r, "250") {
		t.Fatalf("second transaction on the old session: %q", r)
	}
	old.cmd("QUIT", "221")
	e.waitMail("example.test", "during", 2)
}

func TestStopClosesIdleSessionsAfterGracePeriod(t *testing.T) {
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
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	// Stop returned at once; the listener is closed, the open session
	// still works...
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepting after stop")
	}
	d.cmd("NOOP", "250")
	// ...until the grace period ends and the connection is closed.
	_ = d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := d.r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after the grace period")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection not closed by the grace period")
	}
}

// TestReloadDuringMessageStream reloads the config three times while
// senders stream messages through the gateway to a relay: no connection is
// refused, every acknowledged message arrives, and none arrives twice (one
// scheduler owns the spool across reloads).
func TestReloadDuringMessageStream(t *testing.T) {
	e := newTestEnv(t)
	sock := filepath.Join(e.dir, "admin.sock")
	r := startReceiver(t, receiverOpts{})
	cfgWithSize := func(size int) map[string]any {
		return e.config(map[string]any{
			"grace_period": "10s",
			"servers": map[string]any{"mx": map[string]any{
				"listen":           []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
				"max_message_size": size,
			}},
			"routes": []any{map[string]any{"domains": []string{"example.test"},
				"deliver": map[string]any{"target": "relay", "hosts": []string{r.addr}}}},
		}, func(c map[string]any) {
			c["admin"] = map[string]any{"listen": "unix/" + sock}
		})
	}
	app := e.load(cfgWithSize(1000000))
	addr := addrsOf(app, "mx")[0]
	client := adminClient(sock)

	var mu sync.Mutex
	acked := map[string]bool{}
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := 0; s < 4; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// A new connection for every two messages, so that
				// connections arrive throughout the reloads.
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					mu.Lock()
					failures = append(failures, "dial: "+err.Error())
					mu.Unlock()
					return
				}
				ids, err := sendOverConn(c, fmt.Sprintf("stream-%d-%d", s, i), 2)
				c.Close()
				mu.Lock()
				for _, id := range ids {
					acked[id] = true
				}
				if err != nil {
					failures = append(failures, err.Error())
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	for i, size := range []int{2000000, 3000000, 4000000} {
		eventually(t, "messages flowing", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 30*(i+1) })
		if err := postLoad(client, cfgWithSize(size)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "messages after the last reload", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 120 })
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("senders failed during reloads: %v", failures)
	}
	eventually(t, "every acknowledged message at the relay", func() bool {
		got := map[string]bool{}
		for _, m := range r.messages() {
			got[m.header("Subject")] = true
		}
		for id := range acked {
			if !got[id] {
				return false
			}
		}
		return true
	})
	counts := map[string]int{}
	for _, m := range r.messages() {
		counts[m.header("Subject")]++
	}
	for id, n := range counts {
		if n > 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	t.Logf("%d messages acknowledged and delivered once across 3 reloads", len(acked))
}

// sendOverConn sends n messages over one connection, with subjects
// prefix-0, prefix-1, ..., and returns the subjects acknowledged with 250.
func sendOverConn(c net.Conn, prefix string, n int) ([]string, error) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	reply := func() (string, error) {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return "", err
			}
			if len(line) < 4 || line[3] != '-' {
				return line, nil
			}
		}
	}
	expect := func(code string) error {
		line, err := reply()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(line, code) {
			return fmt.Errorf("want %s, got %q", code, line)
		}
		return nil
	}
	if err := expect("220"); err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "EHLO stream.example\r\n")
	if err := expect("250"); err != nil {
		return nil, err
	}
	var ids []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		fmt.Fprintf(c, "MAIL FROM:<a@sender.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n")
		for _, code := range []string{"250", "250", "354"} {
			if err := expect(code); err != nil {
				return ids, err
			}
		}
		fmt.Fprintf(c, "Subject: %s\r\n\r\nbody\r\n.\r\n", id)
		if err := expect("250"); err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	fmt.Fprintf(c, "QUIT\r\n")
	return ids, expect("221")
}

// TestReloadRefusesStoreChange: a reload that would change the store of
// the spool in use fails with a clear error, and the running config (and
// its queue) goes on.
func TestReloadRefusesStoreChange(t *testing.T) {
	e := newTestEnv(t)
	cfg := func(store string) map[string]any {
		return e.config(map[string]any{
			"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}}}},
			"queue":   map[string]any{"path": e.spool, "store": store},
		})
	}
	app := e.load(cfg("segments"))
	raw, _ := json.Marshal(cfg("files"))
	err := caddy.Load(raw, true)
	if err == nil || !strings.Contains(err.Error(), "a config reload cannot change it to files") {
		t.Fatalf("reload to another store: %v", err)
	}
	if running := runningApp(t); running != app || app.TestQueue() == nil {
		t.Fatal("the old config does not run any more")
	}
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	if r := d.sendMail("a@sender.test", "u@example.test", "Subject: still\r\n\r\nhere"); !strings.HasPrefix(r, "250") {
		t.Fatalf("after the refused reload: %q", r)
	}
}
