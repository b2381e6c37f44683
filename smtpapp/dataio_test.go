package smtpapp_test

import (
	"io"
	"os"
	"strings"
	"testing"
)

// TestDataLineLimit: max_line_length bounds a message line (our DATA
// reader refuses the message and the session goes on, while go-smtp's own
// byte-by-byte count is off) and a command line (go-smtp ends the session
// as before). A message whose lines are just within the limit is taken.
func TestDataLineLimit(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"max_line_length": 1000})[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")

	within := strings.Repeat("x", 998) // 1000 bytes with CR LF
	if reply := d.sendMail("a@client.example", "user@example.test", "Subject: long\r\n\r\n"+within); !strings.HasPrefix(reply, "250") {
		t.Fatalf("a message with 1000-byte lines: %q", reply)
	}
	if reply := d.sendMail("a@client.example", "user@example.test", "Subject: longer\r\n\r\n"+within+"y"); !strings.HasPrefix(reply, "500 5.5.2") {
		t.Fatalf("a message with a 1001-byte line: %q, want 500 5.5.2", reply)
	}
	d.cmd("NOOP", "250") // the session goes on

	files := e.waitMail("example.test", "user", 1)
	if b, err := os.ReadFile(files[0]); err != nil || !strings.Contains(string(b), "\r\n\r\n"+within+"\r\n") {
		t.Errorf("the delivered message lacks its long line (%v)", err)
	}

	d.send("%s", "NOOP "+strings.Repeat("z", 1000))
	d.expect("500 5.4.0") // Too long line, closing connection
	if rest, err := io.ReadAll(d.r); len(rest) != 0 {
		t.Errorf("after the too long command: %q, %v", rest, err)
	}
}
