package dataread

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing/iotest"
)

// model is the rules of the package written as plainly as possible, over
// the whole input at once: the reference the streaming Reader is compared
// with. It returns the output, the length of the content in the input (its
// end line included) and the first violation (an *Error), or
// io.ErrUnexpectedEOF for a DATA stream without end line.
func model(in []byte, opt Options, dots bool) (out []byte, n int, err error) {
	body, n := in, len(in)
	if dots {
		i := bytes.Index(in, []byte("\r\n.\r\n"))
		switch {
		case bytes.HasPrefix(in, []byte(".\r\n")):
			body, n = nil, 3
		case i < 0:
			return nil, 0, io.ErrUnexpectedEOF
		default:
			body, n = in[:i+2], i+5
		}
	}
	var first *Error
	note := func(kind error, at int) {
		if first == nil || int64(at) < first.Offset || int64(at) == first.Offset && rank(kind) < rank(first.Kind) {
			first = &Error{Kind: kind, Offset: int64(at)}
		}
	}
	var from []int // the input offset of each output byte
	lineStart := 0
	endLine := func(end int) {
		if l := opt.MaxLineLength; l > 0 && end-lineStart > l {
			note(ErrLineTooLong, lineStart+l)
		}
		lineStart = end
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case dots && i == lineStart && c == '.':
			// dot-stuffing
		case c == 0:
			note(ErrNUL, i)
		case c == '\r' && i+1 < len(body) && body[i+1] == '\n':
			out = append(out, "\r\n"...)
			from = append(from, i, i+1)
			i++
			endLine(i + 1)
		case c == '\r' || c == '\n':
			if !opt.Normalize {
				kind := ErrBareLF
				if c == '\r' {
					kind = ErrBareCR
				}
				note(kind, i)
			}
			out = append(out, "\r\n"...)
			from = append(from, i, i)
			endLine(i + 1)
		default:
			out = append(out, c)
			from = append(from, i)
		}
	}
	endLine(len(body)) // BDAT content may end inside a line
	if m := opt.MaxSize; m > 0 && int64(len(out)) > m {
		note(ErrTooLarge, from[m])
	}
	if first != nil {
		return out, n, first
	}
	return out, n, nil
}

// cutReader returns data in pieces that end at the given offsets.
type cutReader struct {
	data []byte
	cuts []int // increasing offsets
	off  int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	for len(c.cuts) > 0 && c.cuts[0] <= c.off {
		c.cuts = c.cuts[1:]
	}
	n := len(c.data)
	if len(c.cuts) > 0 {
		n = min(n, c.cuts[0]-c.off)
	}
	n = copy(p, c.data[:n])
	c.data, c.off = c.data[n:], c.off+n
	return n, nil
}

// how says how a test feeds the input and takes the output.
type how struct {
	src     func([]byte) io.Reader // nil: all at once
	bufSize int                    // of the bufio.Reader of a DATA stream
	step    int                    // bytes per Read; 0: io.ReadAll
	drainAt int                    // > 0: Drain after this many bytes of output
}

// result is what one read of content gives.
type result struct {
	out  []byte
	err  error  // nil, *Error, or another error
	rest []byte // DATA: what stays in the bufio.Reader and the source
}

func run(in []byte, opt Options, dots bool, h how) result {
	var src io.Reader = bytes.NewReader(in)
	if h.src != nil {
		src = h.src(in)
	}
	var br *bufio.Reader
	var r *Reader
	if dots {
		br = bufio.NewReaderSize(src, max(h.bufSize, 16))
		r = NewReader(br, opt)
	} else {
		r = NewChunkChecker(src, opt)
	}
	var res result
	switch {
	case h.drainAt > 0:
		res.out, res.err = io.ReadAll(io.LimitReader(r, int64(h.drainAt)))
		if res.err == nil {
			res.err = r.Drain()
		}
	case h.step > 0:
		buf := make([]byte, h.step)
		for {
			n, err := r.Read(buf)
			if n > len(buf) {
				panic("Read returned more than len(p)")
			}
			res.out = append(res.out, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				res.err = err
				break
			}
		}
	default:
		res.out, res.err = io.ReadAll(r)
	}
	if res.err != nil {
		// The error sticks.
		if n, err := r.Read(make([]byte, 8)); n != 0 || !sameErr(err, res.err) {
			panic("Read after the end did not repeat the error")
		}
	}
	if br != nil {
		res.rest, _ = io.ReadAll(br)
	}
	return res
}

// ways are the ways every input is read in the tests; results must not
// depend on them.
func ways(in []byte) []how {
	hs := []how{
		{},
		{bufSize: 4096, step: 32 << 10},
		{src: func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
		{src: func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) }, step: 1},
		{step: 1},
		{step: 2},
		{step: 3, bufSize: 17},
		{drainAt: 1},
		{drainAt: 5},
	}
	for i := 1; i < len(in); i++ {
		cuts := []int{i}
		hs = append(hs, how{src: func(b []byte) io.Reader { return &cutReader{data: b, cuts: cuts} }})
	}
	return hs
}

func sameErr(a, b error) bool {
	var ea, eb *Error
	if errors.As(a, &ea) && errors.As(b, &eb) {
		return *ea == *eb
	}
	return a == b
}
