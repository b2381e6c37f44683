package ldap

import (
	"encoding/json"
	"net/textproto"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/maildir"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/mx"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

// startGateway runs the smtp app with one plaintext listener and a route
// for example.test guarded by check (a JSON module of smtp.checks), and
// returns the listener's address. Caddy is stopped when the test ends.
func startGateway(t *testing.T, check map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": testutil.StorageDir(t)},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"smtp": map[string]any{
			"hostname": "mx.example.internal",
			"queue":    map[string]any{"path": spool},
			"servers": map[string]any{"mx": map[string]any{
				"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			}},
			"routes": []any{map[string]any{
				"domains": []string{"example.test"},
				"checks":  []any{check},
				"deliver": map[string]any{"target": "maildir", "path": filepath.Join(dir, "mail", "{local}"), "create_mailboxes": true},
			}},
		}},
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() {
		_ = caddy.Stop()
		// The queue closes in the background; its lock is free then.
		testutil.Eventually(t, 15*time.Second, "queue closed after stop", func() bool {
			f, err := spoolfs.Lock(spool, "msg")
			if err == nil {
				f.Close()
			}
			return err == nil
		})
	})
	app, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		t.Fatal(err)
	}
	return app.(*smtpapp.App).Servers["mx"].Addrs()[0].String()
}

// smtpCmd sends a command and returns the reply, failing unless it has
// the code and starts with prefix (an enhanced code, say).
func smtpCmd(t *testing.T, c *textproto.Conn, code int, prefix, format string, args ...any) string {
	t.Helper()
	id, err := c.Cmd(format, args...)
	if err != nil {
		t.Fatal(err)
	}
	c.StartResponse(id)
	defer c.EndResponse(id)
	_, msg, err := c.ReadResponse(code)
	if err != nil || !strings.HasPrefix(msg, prefix) {
		t.Fatalf("%q: reply %v %q, want %d %s", format, err, msg, code, prefix)
	}
	return msg
}

// TestRecipientsAtRCPT: through a real SMTP listener, a user in the
// directory is taken, an unknown one (or a filter wildcard) gets 550 5.1.1
// at RCPT with nothing of the directory in the reply, and with slapd
// stopped a recipient not cached gets 451 4.4.3.
func TestRecipientsAtRCPT(t *testing.T) {
	s := startSlapd(t)
	addr := startGateway(t, map[string]any{
		"check": "ldap", "url": s.ldapURL, "start_tls": true, "ca": []string{s.caFile},
		"bind_dn": testBindDN, "bind_password": testPassword,
		"base_dn": "ou=people," + testSuffix, "filter": "(&(objectClass=inetOrgPerson)(uid={local}))",
	})
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	smtpCmd(t, c, 250, "", "EHLO client.example")
	smtpCmd(t, c, 250, "", "MAIL FROM:<sender@sender.test>")
	smtpCmd(t, c, 250, "", "RCPT TO:<alice@example.test>")
	smtpCmd(t, c, 250, "", "RCPT TO:<Bob+lists@example.test>")
	for _, rcpt := range []string{"nobody@example.test", "*@example.test"} {
		tellsNothing(t, smtpCmd(t, c, 550, "5.1.1", "RCPT TO:<%s>", rcpt))
	}
	s.stop()
	smtpCmd(t, c, 250, "", "RCPT TO:<alice@example.test>") // cached
	tellsNothing(t, smtpCmd(t, c, 451, "4.4.3", "RCPT TO:<carol@example.test>"))
	smtpCmd(t, c, 221, "", "QUIT")
}

// tellsNothing fails if a reply shows something of the directory.
func tellsNothing(t *testing.T, reply string) {
	t.Helper()
	for _, leak := range []string{"127.0.0.1", "dc=", "ldap", "LDAP", "slapd", "connect"} {
		if strings.Contains(reply, leak) {
			t.Errorf("reply %q shows %q", reply, leak)
		}
	}
}
