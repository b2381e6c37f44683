package smtpapp_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/logging" // the file log writer
	"github.com/emersion/go-smtp"
)

// logTo sends every log line of the process at level and above to a file in
// JSON, so that a test can see what was logged and at which level.
func logTo(path, level string) func(map[string]any) {
	return func(cfg map[string]any) {
		cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{
			"level":   level,
			"writer":  map[string]any{"output": "file", "filename": path},
			"encoder": map[string]any{"format": "json"},
		}}}
	}
}

// logEntry is one JSON log line.
type logEntry map[string]any

// readLog returns the log lines in path whose message is msg.
func readLog(t *testing.T, path, msg string) []logEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e logEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil && e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// TestLogLevels: refusals (relaying denied, an address trick, a bare LF in
// DATA) log at warning with the reply code; a client that drops the
// connection in the middle of DATA is logged at info, never as our error.
func TestLogLevels(t *testing.T) {
	e := newTestEnv(t)
	logFile := filepath.Join(e.dir, "caddy.log")
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
		}},
	}, logTo(logFile, "DEBUG")))
	addr := addrsOf(app, "mx")[0]

	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<x@elsewhere.test>", "550 5.7.1")
	d.cmd("RCPT TO:<x%elsewhere.test@example.test>", "550 5.7.1")
	d.cmd("RCPT TO:<u@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: s\r\n\r\nbare\nlf\r\n.\r\n")
	d.expect("550 5.6.0")

	d2 := dial(t, addr)
	d2.expect("220")
	d2.cmd("EHLO client.example", "250")
	d2.cmd("MAIL FROM:<a@sender.test>", "250")
	d2.cmd("RCPT TO:<u@example.test>", "250")
	d2.cmd("DATA", "354")
	d2.raw("Subject: half a message\r\n\r\nand then")
	d2.conn.Close()

	var dropped []logEntry
	eventually(t, "the dropped message is logged", func() bool {
		dropped = readLog(t, logFile, "message not received: the client did not complete it")
		return len(dropped) > 0
	})
	if lvl := dropped[0]["level"]; lvl != "info" {
		t.Errorf("client disconnect logged at %v, want info", lvl)
	}
	wantWarn := map[string]bool{"Relaying denied": false, "Relaying denied: source routing": false}
	for _, l := range readLog(t, logFile, "command rejected") {
		reason, _ := l["reason"].(string)
		for w := range wantWarn {
			if strings.HasPrefix(reason, w) && l["level"] == "warn" && l["code"] == float64(550) {
				wantWarn[w] = true
			}
		}
	}
	for w, seen := range wantWarn {
		if !seen {
			t.Errorf("no warning %q with code 550 in the log", w)
		}
	}
	rejected := readLog(t, logFile, "message rejected")
	if len(rejected) != 1 || rejected[0]["level"] != "warn" || rejected[0]["enhanced_code"] != "5.6.0" {
		t.Errorf("bare LF rejection logged as %v, want one warning with 5.6.0", rejected)
	}
	if errs := readLog(t, logFile, "queueing message failed"); len(errs) > 0 {
		t.Errorf("a client's disconnect was logged as our error: %v", errs)
	}
}

// TestHostnameWarning: without a hostname the machine's name is used, and
// a name that is not fully qualified (a CA refuses it; peers distrust it)
// is warned about; a qualified one is not.
func TestHostnameWarning(t *testing.T) {
	e := newTestEnv(t)
	logFile := filepath.Join(e.dir, "caddy.log")
	cfg := e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}}}},
	}, logTo(logFile, "INFO"))
	delete(cfg["apps"].(map[string]any)["smtp"].(map[string]any), "hostname")
	e.load(cfg)
	h, _ := os.Hostname()
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	warned := len(readLog(t, logFile, "no hostname set and this machine's name is not fully qualified: set smtp { hostname mx.example.com }")) > 0
	if want := !strings.Contains(h, ".") && h != "localhost"; warned != want {
		t.Errorf("machine name %q: warned %v, want %v", h, warned, want)
	}
}

// TestDeliveryLogLines: one line per recipient and attempt, in the
// spirit of Postfix's status= lines: message and queue IDs, sender,
// recipient, status (delivered, deferred, bounced), enhanced code, reply,
// relay, delays and the session's TLS fields; and the receive line names
// every recipient and the Message-ID.
func TestDeliveryLogLines(t *testing.T) {
	e := newTestEnv(t)
	logFile := filepath.Join(e.dir, "caddy.log")
	r := startReceiver(t, receiverOpts{})
	r.rcptErr = func(to string) error {
		switch {
		case strings.HasPrefix(to, "bad@"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case strings.HasPrefix(to, "slow@"):
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}}}},
		"routes": []any{
			map[string]any{"domains": []string{"example.test"}, "deliver": map[string]any{"target": "relay", "hosts": []string{r.addr}}},
			map[string]any{"domains": []string{"sender.test"}, "deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true}},
		},
		"queue": map[string]any{"path": e.spool, "retry_initial": "1h", "retry_max": "1h"},
	}, logTo(logFile, "INFO")))
	submit(t, addrsOf(app, "mx")[0], "s@sender.test", "Subject: three\r\nMessage-ID: <three@test>\r\n\r\nhello",
		"good@example.test", "slow@example.test", "bad@example.test")
	var lines []logEntry
	eventually(t, "three delivery lines", func() bool {
		lines = readLog(t, logFile, "delivery")
		return len(lines) >= 3
	})
	want := map[string][2]string{
		"good@example.test": {"delivered", "2.0.0"},
		"slow@example.test": {"deferred", "4.3.0"},
		"bad@example.test":  {"bounced", "5.1.1"},
	}
	for _, l := range lines {
		if !strings.HasSuffix(l["rcpt"].(string), "@example.test") {
			continue // the DSN to the sender about bad@
		}
		w, ok := want[l["rcpt"].(string)]
		if !ok || l["status"] != w[0] || l["dsn"] != w[1] || l["message_id"] != "three@test" || l["from"] != "s@sender.test" ||
			l["relay"] != "127.0.0.1" || l["tls"] != false || l["delay"] == nil || l["transfer"] == nil || l["msg_id"] == "" {
			t.Errorf("delivery line %v, want status %s dsn %s", l, w[0], w[1])
		}
		if w[0] == "delivered" && l["level"] != "info" || w[0] != "delivered" && l["level"] != "warn" {
			t.Errorf("%s logged at %v", l["rcpt"], l["level"])
		}
		delete(want, l["rcpt"].(string))
	}
	if len(want) != 0 {
		t.Errorf("no delivery line for %v", want)
	}
	for _, c := range [][2]string{{"delivered", "none"}, {"deferred", "4xx"}, {"bounced", "5xx"}} {
		if n := app.TestCounter("deliveryResults", c[0], c[1]); n < 1 {
			t.Errorf("caddy_smtp_delivery_results_total{result=%q,reason=%q} = %v", c[0], c[1], n)
		}
	}
	q := readLog(t, logFile, "message queued")
	if len(q) != 1 || q[0]["message_id"] != "three@test" || len(toStrings(q[0]["to"])) != 3 {
		t.Errorf("receive line %v", q)
	}
}
