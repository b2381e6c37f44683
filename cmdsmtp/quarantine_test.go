package cmdsmtp

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpadmin"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/maildir"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/mx"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// quarantiner is a test message check that quarantines the messages whose
// header section contains "quarantine-me".
type quarantiner struct{}

func (quarantiner) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.checks.test_quarantine", New: func() caddy.Module { return new(quarantiner) }}
}

func (quarantiner) StartMessage(*smtpapp.MessageInput) smtpapp.MessageJudge {
	return new(quarantineJudge)
}

type quarantineJudge struct{ head strings.Builder }

func (j *quarantineJudge) Write(p []byte) (int, error) {
	if j.head.Len() < 4096 {
		j.head.Write(p)
	}
	return len(p), nil
}

func (j *quarantineJudge) Finish(context.Context) smtpapp.Verdict {
	if head, _, _ := strings.Cut(j.head.String(), "\r\n\r\n"); strings.Contains(head, "quarantine-me") {
		return smtpapp.Verdict{Result: smtpapp.VerdictQuarantine, Reason: "asked for it", Note: "score 9"}
	}
	return smtpapp.Accept()
}

func (j *quarantineJudge) Abort() {}

func init() { caddy.RegisterModule(quarantiner{}) }

// TestQuarantineCommand: `caddy smtp quarantine list|show|release|delete|
// allow-sender` against the admin API of a running gateway (in this
// process) that quarantines with the test check: the table, --search,
// --json, the view, a release delivered to the maildir, deletes of several
// messages, allow-sender --domain, and the API's errors.
func TestQuarantineCommand(t *testing.T) {
	dir := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	mail := filepath.Join(dir, "mail")
	cfg, err := json.Marshal(map[string]any{
		"admin":   map[string]any{"listen": admin, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "storage")},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"smtp": map[string]any{
			"hostname":               "mx.test",
			"automatic_certificates": false,
			"servers": map[string]any{"mx": map[string]any{
				"listen": []any{map[string]any{"address": smtpAddr, "tls": "off"}},
				"checks": []any{map[string]any{"check": "test_quarantine"}},
			}},
			"routes": []any{map[string]any{"domains": []string{"example.test"},
				"deliver": map[string]any{"target": "maildir", "path": filepath.Join(mail, "{local}"), "create_mailboxes": true}}},
			"queue": map[string]any{"path": filepath.Join(dir, "spool")},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	for i, from := range []string{"a@partner.test", "b@bulk.test", "c@bulk.test"} {
		msg := fmt.Sprintf("From: <%s>\r\nSubject: quarantine-me %d\r\n\r\nbody %d\r\n", from, i, i)
		c, err := smtp.Dial(smtpAddr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SendMail(from, []string{fmt.Sprintf("u%d@example.test", i)}, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	run := func(args ...string) (string, error) { return runSub(t, quarantineCommand(), admin, args...) }
	ok := func(want string, args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("quarantine %s: %q, %v; want output containing %q", strings.Join(args, " "), out, err, want)
		}
		return out
	}
	out := ok("1-3 of 3 message(s)", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "c@bulk.test") ||
		!strings.Contains(lines[1], "quarantine-me 2") || !strings.Contains(lines[1], "test_quarantine") || !strings.HasSuffix(lines[1], "asked for it") {
		t.Errorf("list: not a table, newest first:\n%s", out)
	}
	ok("1-2 of 2 message(s)", "list", "--search", "bulk.test")
	out = ok(`"total":3`, "list", "--json")
	var l smtpadmin.QuarantineList
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Messages) != 3 {
		t.Fatalf("list --json: %v: %s", err, out)
	}
	c, b, a := l.Messages[0].ID, l.Messages[1].ID, l.Messages[2].ID

	out = ok("Reason:", "show", a, "--body")
	if first, _, _ := strings.Cut(out, "\n"); !strings.HasPrefix(first, "Subject:") || !strings.HasSuffix(first, " quarantine-me 0") {
		t.Errorf("show: first line %q, want the subject", first)
	}
	for _, want := range []string{"by test_quarantine", "Check test_quarantine:  quarantine score 9", "State:    quarantined", "\nbody 0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("show: no %q in\n%s", want, out)
		}
	}
	ok(a+" released", "release", a)
	testutil.Eventually(t, 10*time.Second, "the released message in the maildir", func() bool {
		files, _ := filepath.Glob(filepath.Join(mail, "u0", "new", "*"))
		return len(files) == 1
	})
	ok(c+" sender_domain bulk.test is in the allow list, released", "allow-sender", c, "--domain")
	_, err = run("delete", a, b) // a was delivered: b is deleted all the same
	if err == nil || !strings.Contains(err.Error(), a+": ") || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("delete of a quarantined and a delivered message: %v", err)
	}
	ok("The quarantine is empty.", "list")
	out, err = runSub(t, listsCommand(), admin, "show", "allow")
	if err != nil || !strings.Contains(out, "sender_domain  bulk.test") {
		t.Errorf("allow list after allow-sender: %v\n%s", err, out)
	}
}
