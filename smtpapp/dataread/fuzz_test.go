package dataread

import (
	"bytes"
	"io"
	"testing"
)

func FuzzReader(f *testing.F) {
	for _, c := range dataCases {
		f.Add([]byte(c.in+c.left+trailer), c.opt.Normalize, []byte{3, 1}, uint16(c.opt.MaxSize), uint8(c.opt.MaxLineLength))
	}
	f.Fuzz(func(t *testing.T, in []byte, normalize bool, cuts []byte, maxSize uint16, maxLine uint8) {
		opt := Options{MaxSize: int64(maxSize), MaxLineLength: int(maxLine), Normalize: normalize}
		got := fuzzOne(t, in, opt, true, cuts)
		if got.err != nil {
			return
		}
		// The output, dot-stuffed again and ended, reads back as itself.
		again := append(stuff(got.out), ".\r\n"...)
		if back := run(again, Options{}, true, how{}); back.err != nil || !bytes.Equal(back.out, got.out) || len(back.rest) != 0 {
			t.Fatalf("re-stuffed %q reads back as %q, %v, rest %q", again, back.out, back.err, back.rest)
		}
	})
}

func FuzzChunkChecker(f *testing.F) {
	for _, c := range chunkCases {
		f.Add([]byte(c.in), c.opt.Normalize, []byte{3, 1}, uint16(c.opt.MaxSize), uint8(c.opt.MaxLineLength))
	}
	f.Fuzz(func(t *testing.T, in []byte, normalize bool, cuts []byte, maxSize uint16, maxLine uint8) {
		opt := Options{MaxSize: int64(maxSize), MaxLineLength: int(maxLine), Normalize: normalize}
		fuzzOne(t, in, opt, false, cuts)
	})
}

// fuzzOne reads in whole and in the pieces that cuts give (each byte a
// piece length, the first also the size of the reads) and checks both
// results against the model and each other.
func fuzzOne(t *testing.T, in []byte, opt Options, dots bool, cuts []byte) result {
	t.Helper()
	got := run(in, opt, dots, how{})
	mout, n, merr := model(in, opt, dots)
	switch {
	case merr == io.ErrUnexpectedEOF:
		if got.err != io.ErrUnexpectedEOF {
			t.Fatalf("error %v, want %v", got.err, merr)
		}
	case !sameErr(got.err, merr):
		t.Fatalf("error %v, want %v", got.err, merr)
	case merr == nil && !bytes.Equal(got.out, mout):
		t.Fatalf("output %q, want %q", got.out, mout)
	case !bytes.HasPrefix(mout, got.out):
		t.Fatalf("output %q is not a prefix of %q", got.out, mout)
	case dots && !bytes.Equal(got.rest, in[n:]):
		t.Fatalf("left %q unread, want %q", got.rest, in[n:])
	}
	if got.err == nil {
		checkLines(t, got.out)
	}

	var at []int
	for i, c := range cuts {
		at = append(at, int(c%64)+1)
		if i > 0 {
			at[i] += at[i-1]
		}
	}
	step := 1
	if len(cuts) > 0 {
		step += int(cuts[0] % 8)
	}
	split := run(in, opt, dots, how{src: func(b []byte) io.Reader { return &cutReader{data: b, cuts: at} }, step: step})
	// On an error, how much output came before it may depend on the pieces.
	sameOut := bytes.Equal(split.out, got.out) || got.err != nil && (merr == io.ErrUnexpectedEOF || bytes.HasPrefix(mout, split.out))
	if !sameOut || !sameErr(split.err, got.err) || !bytes.Equal(split.rest, got.rest) {
		t.Fatalf("in pieces ending at %v, read %d at a time: %q, %v, rest %q; whole: %q, %v, rest %q",
			at, step, split.out, split.err, split.rest, got.out, got.err, got.rest)
	}
	return got
}

// checkLines fails unless every line ending in out is CR LF and out has no
// NUL.
func checkLines(t *testing.T, out []byte) {
	t.Helper()
	for i, c := range out {
		switch {
		case c == 0:
			t.Fatalf("NUL at %d of output %q", i, out)
		case c == '\r' && (i+1 == len(out) || out[i+1] != '\n'):
			t.Fatalf("bare CR at %d of output %q", i, out)
		case c == '\n' && (i == 0 || out[i-1] != '\r'):
			t.Fatalf("bare LF at %d of output %q", i, out)
		}
	}
}

// stuff dot-stuffs msg, whose lines end in CR LF (RFC 5321 4.5.2).
func stuff(msg []byte) []byte {
	var b []byte
	for len(msg) > 0 {
		line := msg
		if i := bytes.Index(msg, []byte("\r\n")); i >= 0 {
			line = msg[:i+2]
		}
		if line[0] == '.' {
			b = append(b, '.')
		}
		b = append(b, line...)
		msg = msg[len(line):]
	}
	return b
}
