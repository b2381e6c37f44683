package dataread

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/emersion/go-smtp"
)

// lineLimitOf returns the LineLimit and curLineLength of the
// lineLimitReader below br.
func lineLimitOf(tb testing.TB, br *bufio.Reader) (limit, cur int) {
	tb.Helper()
	rd := lineLimitSource(*(*io.Reader)(unsafe.Add(unsafe.Pointer(br), bufioRd)))
	if !isGoSMTPType(reflect.TypeOf(rd), "lineLimitReader") {
		tb.Fatalf("the bufio.Reader reads from a %T", rd)
	}
	l, c := lineLimitCounters(reflect.ValueOf(rd))
	return *l, *c
}

// TestHijackLiftsLineLimit: with go-smtp's MaxLineLength at 1000, a message
// line of 1500 bytes is our Reader's ErrLineTooLong and the connection
// stays in sync, because go-smtp's byte-by-byte count is off while we read
// DATA (and back on after).
func TestHijackLiftsLineLimit(t *testing.T) {
	be := &backend{opt: Options{MaxLineLength: 1000}}
	var during, after []int
	be.inspect = func(br *bufio.Reader, finish func()) {
		l, _ := lineLimitOf(t, br)
		during = append(during, l)
		finish()
		l, _ = lineLimitOf(t, br)
		after = append(after, l)
	}
	c := dial(t, startServer(t, be, func(s *smtp.Server) { s.MaxLineLength = 1000 }))
	c.envelope()
	c.data(strings.Repeat("x", 1500)+"\r\n.\r\n", "550 5.6.0")
	if _, err, _ := be.last(); !errors.Is(err, ErrLineTooLong) {
		t.Errorf("read error %v, want ErrLineTooLong", err)
	}
	c.send("NOOP")
	c.expect("250")
	c.envelope()
	c.data(strings.Repeat("y", 997)+"\r\n.\r\n", "250")
	if len(during) != 2 || during[0] != 0 || during[1] != 0 || after[0] != 1000 || after[1] != 1000 {
		t.Errorf("LineLimit during DATA %v, after %v; want 0 and 1000", during, after)
	}
	c.send(strings.Repeat("N", 1200))
	c.expect("500 5.4.0") // Too long line, closing connection
}

// TestHijackCommandLineLimit: the commands after a message are limited as
// if go-smtp had counted all along, whether they come in the same write as
// the end of data (read ahead into the bufio.Reader while we read) or later.
// When a read fails with ErrTooLongLine, go-smtp (bufio.Reader.ReadLine)
// first takes what it had buffered of the line as a command: "501 Bad
// command", then "500 Too long line" and the end.
func TestHijackCommandLineLimit(t *testing.T) {
	const limit = 1000
	long := strings.Repeat("N", 1200) + "\r\n"
	for _, tc := range []struct {
		name        string
		tail, later string   // sent with the end of data, then after its reply
		replies     []string // after the reply to the message
	}{
		{"a long command after", "", long, []string{"500 5.4.0"}},
		{"a long command read ahead", long, "", []string{"500 5.4.0"}},
		{"a part read ahead, the rest after", "NOOP\r\n" + strings.Repeat("N", 990), strings.Repeat("N", 20) + "\r\n", []string{"250", "501 5.5.2", "500 5.4.0"}},
		{"a part read ahead, a short rest", "NOOP\r\n" + strings.Repeat("N", 500), strings.Repeat("P", 400) + "\r\n", []string{"250", "501 5.5.2", "221"}},
		{"a command of the limit read ahead", "NOOP\r\n" + strings.Repeat("N", limit-2) + "\r\n", "", []string{"250", "501 5.5.2", "221"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &backend{opt: Options{MaxLineLength: limit}}
			c := dial(t, startServer(t, be, func(s *smtp.Server) { s.MaxLineLength = limit }))
			c.envelope()
			c.send("DATA")
			c.expect("354")
			c.write("body\r\n.\r\n" + tc.tail)
			c.expect("250")
			c.write(tc.later + "QUIT\r\n")
			for _, want := range tc.replies {
				c.expect(want)
			}
			if line, err := c.r.ReadString('\n'); err == nil {
				t.Errorf("after the replies: %q, %v; want the connection closed", line, err)
			}
		})
	}
}

// TestLiftLineLimitRestore: restore gives go-smtp's lineLimitReader the
// count it would have reached on the bytes read ahead, and discards them if
// they hold a line over the limit.
func TestLiftLineLimitRestore(t *testing.T) {
	typ := goSMTPLineLimitReader(t)
	for _, tc := range []struct {
		tail     string
		cur      int
		buffered int
	}{
		{"", 1, 0},
		{"NOOP\r\n", 1, 6},
		{"NOOP\r\nxy", 3, 8},
		{strings.Repeat("x", 9), 10, 9},
		{strings.Repeat("x", 10), 11, 0}, // over: discarded, and the next Read fails
		{"A\r\n" + strings.Repeat("x", 12) + "\r\nB", 11, 0}, // a whole line over it
		{"A\n" + strings.Repeat("x", 8) + "\r\n", 1, 12},     // 10 with CR LF: within
	} {
		v := reflect.New(typ.Elem())
		src := (*io.Reader)(unsafe.Pointer(v.Elem().Field(0).UnsafeAddr()))
		*src = strings.NewReader("body\r\n.\r\n" + tc.tail)
		limit, cur := lineLimitCounters(v)
		*limit = 10
		br := bufio.NewReader(v.Interface().(io.Reader))
		restore := liftLineLimit(br)
		if *limit != 0 {
			t.Fatalf("LineLimit %d after liftLineLimit", *limit)
		}
		rd := NewReader(br, Options{})
		if body, err := io.ReadAll(rd); err != nil || string(body) != "body\r\n" {
			t.Fatalf("%q: read %q, %v", tc.tail, body, err)
		}
		restore()
		if *limit != 10 || *cur != tc.cur || br.Buffered() != tc.buffered {
			t.Errorf("%q: LineLimit %d, curLineLength %d, %d bytes buffered; want 10, %d, %d", tc.tail, *limit, *cur, br.Buffered(), tc.cur, tc.buffered)
		}
		if tc.buffered == 0 && tc.cur > 10 {
			if _, err := br.ReadByte(); !errors.Is(err, smtp.ErrTooLongLine) {
				t.Errorf("%q: the next read gives %v, want ErrTooLongLine", tc.tail, err)
			}
		}
	}
}

// goSMTPLineLimitReader returns the type of go-smtp's lineLimitReader,
// learnt from a real server.
func goSMTPLineLimitReader(tb testing.TB) reflect.Type {
	tb.Helper()
	var typ reflect.Type
	be := &backend{inspect: func(br *bufio.Reader, finish func()) {
		typ = reflect.TypeOf(lineLimitSource(*(*io.Reader)(unsafe.Add(unsafe.Pointer(br), bufioRd))))
		finish()
	}}
	c := dial(tb, startServer(tb, be))
	c.envelope()
	c.data(".\r\n", "250")
	c.send("QUIT")
	c.expect("221")
	return typ
}

func TestLineLimitLayout(t *testing.T) {
	if !bufioRdOK {
		t.Fatal("bufio.Reader has no field rd io.Reader")
	}
	typ := goSMTPLineLimitReader(t)
	if !checkLineLimitLayout(typ) {
		t.Fatalf("go-smtp's %v does not have the layout liftLineLimit expects", typ)
	}
	if checkLineLimitLayout(reflect.TypeFor[*countsNothing]()) {
		t.Error("checkLineLimitLayout accepts a reader that does not count")
	}
	// Not a lineLimitReader below the bufio.Reader (go-smtp's Debug
	// writer, say): nothing is changed.
	br := bufio.NewReader(io.TeeReader(strings.NewReader(".\r\n"), io.Discard))
	liftLineLimit(br)()
	if b, err := br.ReadByte(); b != '.' || err != nil {
		t.Errorf("read %q, %v", b, err)
	}
}

// countsNothing has the fields of go-smtp's lineLimitReader, not its
// behaviour.
type countsNothing struct {
	R             io.Reader
	LineLimit     int
	curLineLength int
}

func (c *countsNothing) Read(p []byte) (int, error) { return c.R.Read(p) }
