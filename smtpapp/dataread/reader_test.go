package dataread

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// trailer follows the content of every DATA case: it must stay unread.
const trailer = "RSET\r\n"

type readCase struct {
	in   string
	left string // more input, after the content
	opt  Options
	out  string // on success
	kind error  // the violation expected, or io.ErrUnexpectedEOF
	at   int64  // its offset
}

var dataCases = []readCase{
	// The end of data and dot-stuffing.
	{in: ".\r\n", out: ""},
	{in: "\r\n.\r\n", out: "\r\n"},
	{in: "a\r\n.\r\n", out: "a\r\n"},
	{in: "\r\n\r\n.\r\n", out: "\r\n\r\n"},
	{in: "..\r\n.\r\n", out: ".\r\n"},
	{in: "..a\r\n.\r\n", out: ".a\r\n"},
	{in: ".a\r\n.\r\n", out: "a\r\n"},
	{in: "a\r\n..\r\n.\r\n", out: "a\r\n.\r\n"},
	{in: "a\r\n...\r\n.\r\n", out: "a\r\n..\r\n"},
	{in: "a.\r\n.b\r\n. \r\n.\r\n", out: "a.\r\nb\r\n \r\n"},
	{in: "a\r\n.\r\n", left: ".\r\n", out: "a\r\n"}, // the first end line ends it
	{in: "a\r\n.\r\n", left: "MAIL FROM:<x>\r\n", out: "a\r\n"},
	{in: "a\n.\n\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\n\r\n"},
	{in: "", kind: io.ErrUnexpectedEOF},
	{in: "a\r\n", kind: io.ErrUnexpectedEOF},
	{in: "a\r\n.", kind: io.ErrUnexpectedEOF},
	{in: "a\r\n.\r", kind: io.ErrUnexpectedEOF},
	{in: "a\r\n\x00", kind: io.ErrUnexpectedEOF},

	// Bare line endings around the dot: none of these ends data.
	{in: "a\r\n.\nb\r\n.\r\n", kind: ErrBareLF, at: 4},
	{in: "a\r\n.\nb\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\nb\r\n"},
	{in: "a\n.\r\nb\r\n.\r\n", kind: ErrBareLF, at: 1},
	{in: "a\n.\r\nb\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\nb\r\n"},
	{in: "a\n.\nb\r\n.\r\n", kind: ErrBareLF, at: 1},
	{in: "a\n.\nb\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\nb\r\n"},
	{in: "a\r.\r\nb\r\n.\r\n", kind: ErrBareCR, at: 1},
	{in: "a\r.\r\nb\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\nb\r\n"},
	{in: "a\r.\rb\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\nb\r\n"},
	{in: "a\r\n.\rb\r\n.\r\n", kind: ErrBareCR, at: 4},
	{in: "a\r\n.\rb\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\nb\r\n"},
	{in: "a\r\n.\r\r\n.\r\n", kind: ErrBareCR, at: 4},
	{in: "a\r\n.\r\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\n\r\n"},
	{in: "a\r\n.\r.\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\n\r\n"},
	{in: ".\nb\r\n.\r\n", kind: ErrBareLF, at: 1},
	{in: ".\nb\r\n.\r\n", opt: Options{Normalize: true}, out: "\r\nb\r\n"},
	{in: ".\r.\r\n", kind: io.ErrUnexpectedEOF},
	{in: "a\n..\n.\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n.\r\n\r\n"},
	{in: "a\r\r\n.\r\n", kind: ErrBareCR, at: 1},
	{in: "a\r\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\n"},
	{in: "a\n\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\n"},
	{in: "a\r\n\r\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\n\r\n"},
	{in: "\r\n", kind: io.ErrUnexpectedEOF},
	{in: "\n", kind: io.ErrUnexpectedEOF},
	// A smuggled message: refused, or kept inside the first one.
	{in: "a\r\n\n.\nMAIL FROM:<x>\r\n.\r\n", kind: ErrBareLF, at: 3},
	{in: "a\r\n\n.\nMAIL FROM:<x>\r\n.\r\n", opt: Options{Normalize: true}, out: "a\r\n\r\n\r\nMAIL FROM:<x>\r\n"},
	// The first violation is reported, after reading to the end.
	{in: "a\nb\rc\x00\r\n.\nd\r\n.\r\n", kind: ErrBareLF, at: 1},
	{in: "a\nb\rc\x00\r\n.\nd\r\n.\r\n", opt: Options{Normalize: true}, kind: ErrNUL, at: 5},
	{in: "a\r\x00\n\r\n.\r\n", kind: ErrBareCR, at: 1},
	{in: "a\r\x00\n\r\n.\r\n", opt: Options{Normalize: true}, kind: ErrNUL, at: 2},

	// NUL anywhere.
	{in: "\x00\r\n.\r\n", kind: ErrNUL, at: 0},
	{in: "a\x00b\r\n.\r\n", kind: ErrNUL, at: 1},
	{in: "a\x00\r\n.\r\n", kind: ErrNUL, at: 1},
	{in: "a\r\n\x00.\r\n.\r\n", kind: ErrNUL, at: 3},
	{in: "a\r\n.\x00\r\n.\r\n", kind: ErrNUL, at: 4},
	{in: "a\r\n.\x00\r\n.\r\n", opt: Options{Normalize: true}, kind: ErrNUL, at: 4},
	{in: "a\r\n\x00\r\n.\r\n", opt: Options{Normalize: true}, kind: ErrNUL, at: 3},
	{in: "a\r\n.\r\x00\r\n.\r\n", kind: ErrBareCR, at: 4},

	// Size, counted on the output.
	{in: "abc\r\n.\r\n", opt: Options{MaxSize: 5}, out: "abc\r\n"},
	{in: "abc\r\n.\r\n", opt: Options{MaxSize: 4}, kind: ErrTooLarge, at: 4},
	{in: "abc\r\n.\r\n", opt: Options{MaxSize: 2}, kind: ErrTooLarge, at: 2},
	{in: "..ab\r\n.\r\n", opt: Options{MaxSize: 5}, out: ".ab\r\n"},
	{in: "..ab\r\n.\r\n", opt: Options{MaxSize: 4}, kind: ErrTooLarge, at: 5},
	{in: "ab\ncd\r\n.\r\n", opt: Options{MaxSize: 4, Normalize: true}, kind: ErrTooLarge, at: 3},
	{in: "ab\ncd\r\n.\r\n", opt: Options{MaxSize: 3, Normalize: true}, kind: ErrTooLarge, at: 2},
	{in: "ab\ncd\r\n.\r\n", opt: Options{MaxSize: 2, Normalize: true}, kind: ErrTooLarge, at: 2},
	{in: "ab\ncd\r\n.\r\n", opt: Options{MaxSize: 2}, kind: ErrBareLF, at: 2},
	{in: ".\r\n", opt: Options{MaxSize: 1}, out: ""},

	// Line length, counted on the raw input with the line ending.
	{in: "abcd\r\n.\r\n", opt: Options{MaxLineLength: 6}, out: "abcd\r\n"},
	{in: "abcd\r\n.\r\n", opt: Options{MaxLineLength: 5}, kind: ErrLineTooLong, at: 5},
	{in: "abcd\r\n.\r\n", opt: Options{MaxLineLength: 3}, kind: ErrLineTooLong, at: 3},
	{in: "a\r\n..bc\r\n.\r\n", opt: Options{MaxLineLength: 5}, kind: ErrLineTooLong, at: 8},
	{in: "a\r\n.\r\n", opt: Options{MaxLineLength: 3}, out: "a\r\n"},
	{in: "ab\ncd\r\n.\r\n", opt: Options{MaxLineLength: 4, Normalize: true}, out: "ab\r\ncd\r\n"},
	{in: "ab\ncde\r\n.\r\n", opt: Options{MaxLineLength: 4, Normalize: true}, kind: ErrLineTooLong, at: 7},
	{in: "ab\r\r\n.\r\n", opt: Options{MaxLineLength: 2, Normalize: true}, kind: ErrLineTooLong, at: 2},
	// At one offset: the byte, then the line, then the size.
	{in: "abc\n\r\n.\r\n", opt: Options{MaxLineLength: 3}, kind: ErrBareLF, at: 3},
	{in: "abc\n\r\n.\r\n", opt: Options{MaxLineLength: 3, Normalize: true}, kind: ErrLineTooLong, at: 3},
	{in: "ab\n\r\n.\r\n", opt: Options{MaxLineLength: 2, MaxSize: 2, Normalize: true}, kind: ErrLineTooLong, at: 2},
	{in: "ab\rc\r\n.\r\n", opt: Options{MaxLineLength: 2, MaxSize: 2}, kind: ErrBareCR, at: 2},
	{in: "ab\r\n.\r\n", opt: Options{MaxLineLength: 2, MaxSize: 2}, kind: ErrLineTooLong, at: 2},
}

var chunkCases = []readCase{
	{in: "", out: ""},
	{in: "a\r\nb\r\n", out: "a\r\nb\r\n"},
	{in: "a\r\nb", out: "a\r\nb"},
	{in: ".\r\n..a\r\n", out: ".\r\n..a\r\n"},
	{in: "a\r\n.\r\nb\r\n", out: "a\r\n.\r\nb\r\n"},
	{in: "a\r", kind: ErrBareCR, at: 1},
	{in: "a\r", opt: Options{Normalize: true}, out: "a\r\n"},
	{in: "a\rb", kind: ErrBareCR, at: 1},
	{in: "a\nb", kind: ErrBareLF, at: 1},
	{in: "\n", opt: Options{Normalize: true}, out: "\r\n"},
	{in: "a\r\r\nb\n", opt: Options{Normalize: true}, out: "a\r\n\r\nb\r\n"},
	{in: "a\r\n\x00", kind: ErrNUL, at: 3},
	{in: "a\r\n\x00", opt: Options{Normalize: true}, kind: ErrNUL, at: 3},
	{in: "abc\r\n", opt: Options{MaxSize: 4}, kind: ErrTooLarge, at: 4},
	{in: "abc\r", opt: Options{MaxSize: 4, Normalize: true}, kind: ErrTooLarge, at: 3},
	{in: "abc", opt: Options{MaxLineLength: 2}, kind: ErrLineTooLong, at: 2},
	{in: "abc\r\nd\r\nefghij", opt: Options{MaxLineLength: 5}, kind: ErrLineTooLong, at: 13},
}

func TestReader(t *testing.T) {
	for _, c := range dataCases {
		checkCase(t, c, true)
	}
}

func TestChunkChecker(t *testing.T) {
	for _, c := range chunkCases {
		checkCase(t, c, false)
	}
}

// checkCase reads c.in in every way of ways and checks the result against
// the expectation of c and against the model.
func checkCase(t *testing.T, c readCase, dots bool) {
	t.Helper()
	in := []byte(c.in)
	wantRest := ""
	if dots && c.kind != io.ErrUnexpectedEOF {
		wantRest = c.left + trailer
		in = append(in, wantRest...)
	}
	name := fmt.Sprintf("%q %+v", c.in+c.left, c.opt)
	mout, _, merr := model(in, c.opt, dots)
	switch {
	case c.kind == nil && (merr != nil || string(mout) != c.out):
		t.Errorf("%s: the model gives %q, %v", name, mout, merr)
	case c.kind == io.ErrUnexpectedEOF && merr != io.ErrUnexpectedEOF,
		c.kind != nil && c.kind != io.ErrUnexpectedEOF && !sameErr(merr, &Error{c.kind, c.at}):
		t.Errorf("%s: the model gives %v", name, merr)
	}
	for _, h := range ways(in) {
		if t.Failed() {
			return // one case at a time
		}
		got := run(in, c.opt, dots, h)
		where := fmt.Sprintf("%s read %+v", name, h)
		switch {
		case c.kind == nil:
			if got.err != nil {
				t.Errorf("%s: error %v", where, got.err)
			} else if h.drainAt == 0 && string(got.out) != c.out {
				t.Errorf("%s: got %q, want %q", where, got.out, c.out)
			}
		case c.kind == io.ErrUnexpectedEOF:
			if got.err != io.ErrUnexpectedEOF {
				t.Errorf("%s: error %v, want %v", where, got.err, c.kind)
			}
		default:
			if want := (&Error{c.kind, c.at}); !sameErr(got.err, want) {
				t.Errorf("%s: error %v, want %v", where, got.err, want)
			}
		}
		if !bytes.HasPrefix(mout, got.out) && c.kind != io.ErrUnexpectedEOF {
			t.Errorf("%s: output %q is not a prefix of %q", where, got.out, mout)
		}
		if dots && string(got.rest) != wantRest {
			t.Errorf("%s: left %q unread, want %q", where, got.rest, wantRest)
		}
	}
}

func TestReaderLong(t *testing.T) {
	// Lines longer than the bufio.Reader, dot-stuffed lines at its edges.
	var in, want strings.Builder
	for i := range 300 {
		line := strings.Repeat(string(rune('a'+i%26)), i*7%5000)
		if i%3 == 0 {
			line = "." + line
			in.WriteString(".")
		}
		in.WriteString(line + "\r\n")
		want.WriteString(line + "\r\n")
	}
	in.WriteString(".\r\n")
	for _, h := range []how{{}, {step: 7}, {bufSize: 16, step: 100}, {bufSize: 4096, step: 4096}} {
		got := run([]byte(in.String()+trailer), Options{}, true, h)
		if got.err != nil || string(got.out) != want.String() || string(got.rest) != trailer {
			t.Errorf("read %+v: error %v, output equal: %v, rest %q", h, got.err, string(got.out) == want.String(), got.rest)
		}
	}
}

func TestErrorIs(t *testing.T) {
	_, err := io.ReadAll(NewChunkChecker(strings.NewReader("a\nb"), Options{}))
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrBareLF) || e.Offset != 1 {
		t.Fatalf("error %v", err)
	}
	if !strings.Contains(err.Error(), "bare LF") || !strings.Contains(err.Error(), "offset 1") {
		t.Errorf("message %q", err)
	}
}
