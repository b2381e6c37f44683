package tlsupgrade

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/emersion/go-smtp"
)

// textprotoDots is the reference: what textproto's DotWriter writes for
// the chunks written one after the other.
func textprotoDots(chunks [][]byte) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	w := textproto.NewWriter(bw).DotWriter()
	for _, c := range chunks {
		w.Write(c)
	}
	w.Close()
	return out.Bytes()
}

// stuffed is what a dotStuffer writes for the same chunks, through a
// bufio.Writer of size (small sizes make it write runs straight through).
func stuffed(chunks [][]byte, size int) []byte {
	var out bytes.Buffer
	d := dotStuffer{w: bufio.NewWriterSize(&out, size)}
	for _, c := range chunks {
		if n, err := d.Write(c); n != len(c) || err != nil {
			panic("dotStuffer.Write to a bytes.Buffer failed")
		}
	}
	d.Close()
	return out.Bytes()
}

// split cuts data into chunks of the lengths in cuts (in turn, 0 to 255;
// the rest is the last chunk).
func split(data, cuts []byte) [][]byte {
	var chunks [][]byte
	for _, c := range cuts {
		n := min(int(c), len(data))
		chunks = append(chunks, data[:n])
		data = data[n:]
	}
	return append(chunks, data)
}

func TestDotStuffer(t *testing.T) {
	for _, tc := range []struct {
		in   []string // chunks
		want string   // what textproto's DotWriter writes
	}{
		{nil, "\r\n.\r\n"},
		{[]string{""}, "\r\n.\r\n"},
		{[]string{"a\r\n"}, "a\r\n.\r\n"},
		{[]string{"a"}, "a\r\n.\r\n"},
		{[]string{"a\r"}, "a\r\n.\r\n"},
		{[]string{"."}, "..\r\n.\r\n"},
		{[]string{".\r\n"}, "..\r\n.\r\n"},
		{[]string{"a\r\n.b\r\n..\r\n"}, "a\r\n..b\r\n...\r\n.\r\n"},
		{[]string{"a\n.b\nc"}, "a\r\n..b\r\nc\r\n.\r\n"},
		{[]string{"a\r", "\n", ".", "b\r\n"}, "a\r\n..b\r\n.\r\n"},
		{[]string{"a\r\n", ".b"}, "a\r\n..b\r\n.\r\n"},
		{[]string{"\n\n"}, "\r\n\r\n.\r\n"},
		{[]string{"a\r.b\r\n"}, "a\r.b\r\n.\r\n"}, // no line starts after a bare CR
		{[]string{"a\r\r\n"}, "a\r\r\r\n.\r\n"},   // the second CR is text to the DotWriter
		{[]string{"a\r\r\r\n"}, "a\r\r\r\n.\r\n"}, // the third is a line's CR again
		{[]string{"a\r", "\r", "\n", "\r", "\r\n"}, "a\r\r\r\n\r\r\r\n.\r\n"},
		{[]string{"\r\n", "\r", "\r", "."}, "\r\n\r\r.\r\n.\r\n"}, // a CR at a line start ends it
	} {
		chunks := make([][]byte, len(tc.in))
		for i, c := range tc.in {
			chunks[i] = []byte(c)
		}
		if ref := string(textprotoDots(chunks)); ref != tc.want {
			t.Fatalf("%q: textproto writes %q, the table says %q", tc.in, ref, tc.want)
		}
		for _, size := range []int{16, 4096} {
			if got := string(stuffed(chunks, size)); got != tc.want {
				t.Errorf("%q (buffer %d): dotStuffer writes %q, want %q", tc.in, size, got, tc.want)
			}
		}
	}
}

// FuzzDotStuffer: a dotStuffer writes what textproto's DotWriter writes,
// byte for byte, for any input written in any chunks.
func FuzzDotStuffer(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\n.line\r\n..\r\n.\r\nend"), []byte{3, 0, 17})
	f.Add([]byte("a\r\r\r\n\n.\r.\n\r\n."), []byte{1, 1, 1, 1, 1, 1})
	f.Add([]byte(strings.Repeat("x\r\n.", 40)), []byte{200, 255})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		chunks := split(data, cuts)
		want := textprotoDots(chunks)
		for _, size := range []int{16, 4096} {
			if got := stuffed(chunks, size); !bytes.Equal(got, want) {
				t.Fatalf("chunks %q (buffer %d):\ndotStuffer %q\ntextproto  %q", chunks, size, got, want)
			}
		}
	})
}

// dialMX opens a session to the test server at addr, closed when the test
// ends.
func dialMX(t testing.TB, addr string) *Conn {
	t.Helper()
	c, err := Dial(testContext(t), addr, Options{LocalName: localName, ServerName: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// envelope starts a transaction on c: MAIL and one RCPT, both accepted.
func envelope(t testing.TB, c *Conn) {
	t.Helper()
	if err := c.Client.Mail("a@sender.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Rcpt("b@example.test", nil); err != nil {
		t.Fatal(err)
	}
}

// TestSendDATA: bodies sent with SendDATA reach a real go-smtp server as
// the same bodies sent with go-smtp's Client.Data do, one transaction
// after the other on one connection; a body bigger than the buffers
// arrives whole.
func TestSendDATA(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t, nil, false)
	c := dialMX(t, ts.addr)
	bodies := []string{
		"Subject: plain\r\n\r\nhello\r\n",
		"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\n",
		"no final line ending",
		"bare\nline\nendings\n.and a dot\n",
		"",
		"Subject: big\r\n\r\n" + strings.Repeat(".a line that starts with a dot\r\n", 10_000), // 300 KiB
	}
	for _, body := range bodies {
		envelope(t, c)
		w, err := c.Client.Data()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, body)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		envelope(t, c)
		reply, err := c.SendDATA(strings.NewReader(body))
		if err != nil || reply.Code != 250 {
			t.Fatalf("%.20q: %v %v", body, reply, err)
		}
	}
	if err := c.Client.Quit(); err != nil {
		t.Fatal(err)
	}
	_, msgs := ts.be.snapshot()
	if len(msgs) != 2*len(bodies) {
		t.Fatalf("%d messages, want %d", len(msgs), 2*len(bodies))
	}
	for i := range bodies {
		if ref, got := msgs[2*i].Data, msgs[2*i+1].Data; got != ref {
			t.Errorf("%.20q: arrived as %.60q (%d bytes), with Client.Data as %.60q (%d bytes)", bodies[i], got, len(got), ref, len(ref))
		}
	}
	if msgs[1].Data != bodies[0] || msgs[len(msgs)-1].Data != bodies[len(bodies)-1] {
		t.Error("a body with CR LF lines did not arrive as it was")
	}
}

// TestSendDATARefused: a refusal of DATA, or of the message after the end
// of data, is an *smtp.SMTPError with its enhanced code, and the Client
// goes on with the connection.
func TestSendDATARefused(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name, at, reply string
		code            int
		enh             smtp.EnhancedCode
	}{
		{"DATA", "DATA", "554 5.5.1 no valid recipients\r\n", 554, smtp.EnhancedCode{5, 5, 1}},
		{"the message", ".", "550 5.7.1 content refused\r\n", 550, smtp.EnhancedCode{5, 7, 1}},
		{"the message, for now", ".", "451 4.3.0 try again\r\n", 451, smtp.EnhancedCode{4, 3, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inData := false
			ss := startScript(t, "220 mx.test ESMTP\r\n", func(_ int, line string) string {
				switch {
				case inData && line == tc.at:
					inData = false
					return tc.reply
				case inData && line == ".":
					inData = false
					return "250 2.0.0 queued\r\n"
				case inData:
					return ""
				case strings.HasPrefix(line, "EHLO"):
					return "250-mx.test\r\n250 PIPELINING\r\n"
				case line == "DATA" && line == tc.at:
					return tc.reply
				case line == "DATA":
					inData = true
					return "354 go ahead\r\n"
				}
				return "250 2.0.0 ok\r\n"
			})
			c := dialMX(t, ss.addr)
			envelope(t, c)
			reply, err := c.SendDATA(strings.NewReader("Subject: x\r\n\r\nbody\r\n"))
			var se *smtp.SMTPError
			if reply != nil || !errors.As(err, &se) || se.Code != tc.code || se.EnhancedCode != tc.enh {
				t.Fatalf("SendDATA = %v, %v; want a %d %v refusal", reply, err, tc.code, tc.enh)
			}
			if err := c.Client.Reset(); err != nil {
				t.Fatalf("RSET after the refusal: %v", err)
			}
		})
	}
}

// TestSendDATAReadError: a body that cannot be read ends SendDATA with the
// error, not with a message cut short: neither the end-of-data line nor,
// when the Conn is closed, a QUIT goes into the message; the connection is
// closed.
func TestSendDATAReadError(t *testing.T) {
	checkLeaks(t)
	ss := &scriptServer{lines: make(chan string, 100)}
	inData := false
	ended := make(chan struct{})
	addr := serveLoopback(t, func(_ *connGroup, conn net.Conn) {
		defer close(ended)
		defer conn.Close()
		ss.serve(conn, 1, "220 mx.test ESMTP\r\n", func(_ int, line string) string {
			switch {
			case inData:
				return "" // the message, until the end line: none comes
			case strings.HasPrefix(line, "EHLO"):
				return "250-mx.test\r\n250 PIPELINING\r\n"
			case line == "DATA":
				inData = true
				return "354 go ahead\r\n"
			}
			return "250 2.0.0 ok\r\n"
		})
	})
	c := dialMX(t, addr)
	envelope(t, c)
	broken := errors.New("disk on fire")
	body := io.MultiReader(strings.NewReader("Subject: x\r\n\r\npart\r\n"), iotest.ErrReader(broken))
	if _, err := c.SendDATA(body); !errors.Is(err, broken) {
		t.Fatalf("SendDATA: %v, want the read error", err)
	}
	c.Close()
	<-ended
	lines := ss.seen()
	i := slices.Index(lines, "DATA")
	if i < 0 || slices.Contains(lines[i:], ".") || slices.Contains(lines[i:], "QUIT") {
		t.Errorf("the server read %q", lines)
	}
}
