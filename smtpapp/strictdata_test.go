package smtpapp_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestStrictDataVariants sends end-of-data and line-ending variants that a
// next hop could read differently (SMTP smuggling) over one connection:
// each is refused with 550 5.6.0 after the real end of data, the
// connection stays in step (the next transaction works), and only the
// clean message is delivered, byte for byte.
func TestStrictDataVariants(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
		}},
	}))
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	for _, body := range []string{
		"a\r\n.\rX\r\nMAIL FROM:<evil@x>\r\n",
		"a\r\n.\r\r\n",
		"a\n.\r\nRCPT TO:<evil@x>\r\n",
		"a\r.\r\n",
		"a\r\n.\n",
		"a\r\n\x00.\r\n",
		"nul\x00inside\r\n",
		"bare\rcr\r\n",
		"bare\nlf\r\n",
	} {
		d.cmd("MAIL FROM:<a@sender.test>", "250")
		d.cmd("RCPT TO:<u@example.test>", "250")
		d.cmd("DATA", "354")
		d.raw("Subject: s\r\n\r\n" + body + "\r\n.\r\n")
		d.expect("550 5.6.0")
	}
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<u@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: clean\r\n\r\n..stuffed\r\nend\r\n.\r\n")
	d.expect("250")
	files := e.waitMail("example.test", "u", 1)
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := string(data); !strings.HasSuffix(got, "Subject: clean\r\n\r\n.stuffed\r\nend\r\n") {
		t.Errorf("stored message ends %q", got[max(0, len(got)-60):])
	}
}

// TestNormalizeBareLineEndings: with bare_line_endings normalize, bare CR
// and LF become CRLF, a bare-LF dot line does not end the data, and NUL is
// still refused.
func TestNormalizeBareLineEndings(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen":            []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"bare_line_endings": "normalize",
		}},
	}))
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<u@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: n\r\n\r\nbare\nlf\rcr\n.\nRSET\r\n.\r\n")
	d.expect("250")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<u@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: n\r\n\r\nnul\x00\r\n.\r\n")
	d.expect("550 5.6.0")
	files := e.waitMail("example.test", "u", 1)
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := string(data); !strings.HasSuffix(got, "Subject: n\r\n\r\nbare\r\nlf\r\ncr\r\n\r\nRSET\r\n") {
		t.Errorf("stored message ends %q", got[max(0, len(got)-60):])
	}
}

// TestStrictBDATVariants: in BDAT the chunk boundaries do not hide line
// endings. A CRLF split over two chunks is a CRLF; a CR at the end of a
// chunk that the next one does not continue with LF, a lone CR at the end
// of the LAST chunk, a bare LF and a NUL are refused with 550 5.6.0; a "."
// line is content (BDAT has no end-of-data line), stored as sent.
func TestStrictBDATVariants(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
		}},
	}))
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	bdat := func(chunks ...string) string {
		d.cmd("MAIL FROM:<a@sender.test>", "250")
		d.cmd("RCPT TO:<bdat@example.test>", "250")
		for i, c := range chunks {
			if i == len(chunks)-1 {
				d.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(c), c))
				return d.reply()
			}
			d.raw(fmt.Sprintf("BDAT %d\r\n%s", len(c), c))
			d.expect("250")
		}
		return ""
	}
	for _, chunks := range [][]string{
		{"Subject: s\r\n\r\na\r", "b\r\n"},
		{"Subject: s\r\n\r\na\r"},
		{"Subject: s\r\n\r\na\r", "\r\n"},
		{"Subject: s\r\n\r\na\nb\r\n"},
		{"Subject: s\r\n\r\na\r\n", "\n"},
		{"Subject: s\r\n\r\na\x00b\r\n"},
		{"Subject: s\r\n\r\n", "a\rb", "\r\n"},
	} {
		if got := bdat(chunks...); !strings.HasPrefix(got, "550 5.6.0") {
			t.Errorf("chunks %q: got %q, want 550 5.6.0", chunks, got)
		}
	}
	want := "Subject: clean\r\n\r\nsplit\r\n.\r\nnot the end\r\n"
	if got := bdat("Subject: clean\r\n\r\nsplit\r", "\n.\r\nnot the end\r\n"); !strings.HasPrefix(got, "250") {
		t.Fatalf("clean chunks: %q", got)
	}
	files := e.waitMail("example.test", "bdat", 1)
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(data), want) {
		t.Errorf("stored message ends %q, want %q", data[max(0, len(data)-len(want)):], want)
	}
}
