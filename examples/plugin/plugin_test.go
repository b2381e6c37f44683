package plugin_test

import (
	"encoding/json"
	"fmt"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-smtp/caddy-smtp"
	_ "github.com/caddy-smtp/caddy-smtp/examples/plugin"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// TestOutOfTreeTargetAndMatcher loads a config that routes by the
// out-of-tree matcher to the out-of-tree target, sends two messages over
// SMTP and checks that the matched recipient was archived by the plugin
// and the other one went to the built-in maildir target.
func TestOutOfTreeTargetAndMatcher(t *testing.T) {
	dir := t.TempDir()
	archive, mail := filepath.Join(dir, "archive"), filepath.Join(dir, "mail")
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": testutil.StorageDir(t)},
		"apps": map[string]any{"smtp": map[string]any{
			"hostname":               "localhost",
			"automatic_certificates": false,
			"servers": map[string]any{"mx": map[string]any{
				"listen": []any{map[string]any{"address": addr, "tls": "off"}},
			}},
			"queue": map[string]any{"path": filepath.Join(dir, "queue")},
			"routes": []any{
				map[string]any{
					"domains": []string{"example.test"},
					"match":   map[string]any{"local_prefix": "archive+"},
					"deliver": map[string]any{"target": "archive", "dir": archive},
				},
				map[string]any{
					"domains": []string{"example.test"},
					"deliver": map[string]any{"target": "maildir", "path": filepath.Join(mail, "{local}"), "create_mailboxes": true},
				},
			},
		}},
	}
	raw, _ := json.Marshal(cfg)
	if err := caddy.Load(raw, true); err != nil {
		t.Fatal(err)
	}
	defer caddy.Stop()

	for _, to := range []string{"archive+2026@example.test", "bob@example.test"} {
		msg := "From: a@sender.test\r\nTo: " + to + "\r\nSubject: plugin\r\n\r\nhello " + to + "\r\n"
		if err := smtp.SendMail(addr, nil, "a@sender.test", []string{to}, []byte(msg)); err != nil {
			t.Fatalf("sending to %s: %v", to, err)
		}
	}
	testutil.Eventually(t, 20*time.Second, "both messages delivered", func() bool {
		a, _ := filepath.Glob(filepath.Join(archive, "*.eml"))
		m, _ := filepath.Glob(filepath.Join(mail, "bob", "new", "*"))
		return len(a) == 1 && len(m) == 1
	})
	a, _ := filepath.Glob(filepath.Join(archive, "*.eml"))
	body, err := os.ReadFile(a[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "hello archive+2026@example.test") {
		t.Errorf("archived the wrong message:\n%s", body)
	}
	if left, _ := filepath.Glob(filepath.Join(mail, "archive+2026*")); len(left) != 0 {
		t.Errorf("the matched recipient also went to the maildir: %v", left)
	}
}
