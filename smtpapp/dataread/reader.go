package dataread

import (
	"bufio"
	"bytes"
	"io"
)

// Options are the limits and the line-ending mode of a [Reader].
type Options struct {
	// MaxSize is the largest message, in bytes of output, that is read
	// without ErrTooLarge. Default: 0, no limit.
	MaxSize int64

	// MaxLineLength is the longest line, in raw bytes with its line ending,
	// that is read without ErrLineTooLong; RFC 5321 asks for at least 1000.
	// go-smtp's own Server.MaxLineLength (default 2000) applies below the
	// bufio.Reader and counts from LF to LF too, but a line over it breaks
	// the connection. [Hijack] lifts go-smtp's limit while this Reader reads
	// DATA: set this one to the same value. Default: 0, no limit.
	MaxLineLength int

	// Normalize turns each bare CR and bare LF into CR LF instead of failing
	// with ErrBareCR or ErrBareLF. It never changes what ends data, and NUL
	// is refused either way. Default: false.
	Normalize bool
}

// state is where a Reader is in the input.
type state uint8

const (
	stLine     state = iota // after CR LF or at the start: "." CR LF here ends data
	stSoftLine              // after a bare CR or LF: a dot is removed, nothing ends here
	stDot                   // consumed the "." of stLine
	stDotCR                 // consumed the "." CR of stLine
	stText                  // inside a line
	stCR                    // consumed (and put out) a CR inside a line
	stEnd                   // consumed the end of the content
)

// Reader is an io.Reader of message content that enforces the rules of the
// package documentation. It is not safe for concurrent use.
type Reader struct {
	br   *bufio.Reader
	opt  Options
	dots bool // a DATA stream: dot-stuffing and the end-of-data line

	st        state
	off       int64  // raw bytes consumed
	lineStart int64  // offset of the first byte of the current line
	size      int64  // bytes of output so far
	pend      string // output owed (of a CR LF that did not fit)
	err       *Error // the first violation
	drop      bool   // Drain: read to the end, put nothing out

	out []byte // during Read: the output so far, within the caller's buffer

	done bool
	fin  error // what Read returns once done: io.EOF, an *Error or a read error
}

// NewReader reads a DATA stream from br, which is positioned right after
// the 354 reply, up to and including the end-of-data line. It never
// consumes a byte after that line. The message it yields has the dots of
// dot-stuffing removed and keeps its CR LF line endings.
func NewReader(br *bufio.Reader, opt Options) *Reader {
	return &Reader{br: br, opt: opt, dots: true, st: stLine}
}

// NewChunkChecker reads BDAT content from r, the concatenated chunks that
// go-smtp hands to Session.Data, until r reports io.EOF (after the LAST
// chunk). Its output is that content, with the line endings normalized if
// asked. It is not meant for BODY=BINARYMIME messages, whose content need not
// be lines at all.
func NewChunkChecker(r io.Reader, opt Options) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 32<<10), opt: opt, st: stText}
}

// Read reads message content into p. After the end of the content it
// returns io.EOF, or the *Error of the first violation, or the read error
// that stopped it (io.ErrUnexpectedEOF if a DATA stream had no end line).
// A violation stops the output, but Read reads on to the end of the content
// before it returns the error.
func (r *Reader) Read(p []byte) (int, error) {
	r.out = p[:0:len(p)]
	for !r.done && r.flush() {
		if r.st == stEnd {
			r.finish(nil)
			break
		}
		if !r.draining() && len(r.out) == cap(r.out) {
			break
		}
		if r.br.Buffered() == 0 {
			if len(r.out) > 0 && !r.draining() {
				break // do not wait for the client with output in hand
			}
			if _, err := r.br.Peek(1); err != nil {
				r.atError(err)
				continue
			}
		}
		b, _ := r.br.Peek(r.br.Buffered())
		c := r.scan(b)
		r.off += int64(c)
		r.br.Discard(c)
	}
	n := len(r.out)
	r.out = nil
	if n == 0 && r.done {
		return 0, r.fin
	}
	return n, nil
}

// Drain reads to the end of the content without keeping it (after a
// consumer stopped early, say) and returns what Read would have returned at
// the end: nil for content that broke no rule, else the error. Violations
// after the point where reading stopped are still found.
func (r *Reader) Drain() error {
	r.drop = true
	r.pend = ""
	for !r.done {
		r.Read(nil)
	}
	if r.fin == io.EOF {
		return nil
	}
	return r.fin
}

func (r *Reader) draining() bool { return r.drop || r.err != nil }

func (r *Reader) finish(err error) {
	switch {
	case err != nil:
	case r.err != nil:
		err = r.err
	default:
		err = io.EOF
	}
	r.done, r.fin = true, err
}

// atError handles the end of the input or a failed read.
func (r *Reader) atError(err error) {
	if err != io.EOF {
		r.finish(err)
		return
	}
	if r.dots {
		r.finish(io.ErrUnexpectedEOF)
		return
	}
	if r.st == stCR {
		r.bare(ErrBareCR, r.off-1)
		r.emit("\n", r.off-1)
	}
	r.st = stEnd // Read flushes what emit owes, then finishes
}

// flush puts out what is owed and reports whether all of it went out.
func (r *Reader) flush() bool {
	if r.pend == "" {
		return true
	}
	if r.draining() {
		r.pend = ""
		return true
	}
	k := min(len(r.pend), cap(r.out)-len(r.out))
	r.out = append(r.out, r.pend[:k]...)
	r.pend = r.pend[k:]
	return r.pend == ""
}

// scan consumes a prefix of b, the buffered input, and returns its length.
// It stops at the end of the content, when the output is full (unless it is
// draining) or when b is used up.
func (r *Reader) scan(b []byte) int {
	c := 0
	clean := 0 // b[c:clean] has no NUL
	for c < len(b) && r.st != stEnd && r.flush() {
		writing := !r.draining()
		if writing && len(r.out) == cap(r.out) {
			break
		}
		pos := r.off + int64(c)
		ch := b[c]
		switch r.st {
		case stText:
			seg := b[c:]
			if room := cap(r.out) - len(r.out); writing && len(seg) > room {
				seg = seg[:room]
			}
			if clean <= c {
				clean = c + len(seg)
				if i := bytes.IndexByte(seg, 0); i >= 0 {
					clean = c + i
				}
			}
			if n, last := r.wholeLines(seg[:min(len(seg), clean-c)], int(pos-r.lineStart)); n > 0 {
				if last > 0 {
					r.lineStart = pos + int64(last) // text checks the last line
				}
				r.text(seg[:n], pos)
				c += n
				r.lineStart = pos + int64(n)
				r.st = r.lineState(true)
				continue
			}
			if i := lineText(seg[:min(len(seg), clean-c)]); i > 0 {
				r.text(seg[:i], pos)
				c += i
				continue
			}
			switch ch {
			case '\r':
				if c+1 < len(b) && b[c+1] == '\n' && (!writing || cap(r.out)-len(r.out) >= 2) {
					r.text(b[c:c+2], pos)
					c += 2
					r.lineStart = pos + 2
					r.st = r.lineState(true)
					continue
				}
				r.text(b[c:c+1], pos)
				c++
				r.st = stCR
			case '\n':
				c++
				r.bare(ErrBareLF, pos)
				r.endLine(pos + 1)
				r.emit("\r\n", pos)
				r.st = r.lineState(false)
			default: // NUL
				c++
				r.fail(ErrNUL, pos)
			}
		case stCR:
			if ch == '\n' {
				r.text(b[c:c+1], pos)
				c++
				r.lineStart = pos + 1
				r.st = r.lineState(true)
				continue
			}
			// The CR before ch was bare; ch starts the next line.
			r.bare(ErrBareCR, pos-1)
			r.endLine(pos)
			r.emit("\n", pos-1)
			r.st = r.lineState(false)
		case stLine:
			r.st = stText
			if ch == '.' {
				c++
				r.st = stDot
			}
		case stSoftLine:
			r.st = stText
			if ch == '.' {
				c++
			}
		case stDot:
			r.st = stText // the dot is gone; ch is the line's first byte
			if ch == '\r' {
				c++
				r.st = stDotCR
			}
		case stDotCR:
			if ch == '\n' {
				c++
				r.st = stEnd
				continue
			}
			// "." and a bare CR: an empty line; ch starts the next one.
			r.bare(ErrBareCR, pos-1)
			r.endLine(pos)
			r.emit("\r\n", pos-1)
			r.st = stSoftLine
		}
	}
	return c
}

// wholeLines returns the length of the longest prefix of s, which holds no
// NUL, that is whole lines passing unchanged: each ends in CR LF and has no
// other CR or LF, is within MaxLineLength (the first counted from done, its
// bytes before s), and in a DATA stream does not start with a dot (but the
// first, whose start is behind us). Such a run is put out in one piece;
// last is where its last line starts in s.
func (r *Reader) wholeLines(s []byte, done int) (n, last int) {
	for {
		line := s[n:]
		i := bytes.IndexByte(line, '\n')
		if i < 1 || line[i-1] != '\r' || bytes.IndexByte(line[:i-1], '\r') >= 0 {
			return n, last
		}
		if l := r.opt.MaxLineLength; l > 0 && done+i+1 > l {
			return n, last
		}
		last, n, done = n, n+i+1, 0
		if r.dots && n < len(s) && s[n] == '.' {
			return n, last
		}
	}
}

// lineText returns the length of the prefix of s without CR or LF.
func lineText(s []byte) int {
	if i := bytes.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if i := bytes.IndexByte(s, '\r'); i >= 0 {
		s = s[:i]
	}
	return len(s)
}

// lineState is the state at the start of a line: after CR LF (hard) or
// after a bare line ending.
func (r *Reader) lineState(hard bool) state {
	switch {
	case !r.dots:
		return stText
	case hard:
		return stLine
	}
	return stSoftLine
}

// text puts out s, raw input at pos that passes unchanged.
func (r *Reader) text(s []byte, pos int64) {
	if r.err != nil {
		return
	}
	end := pos + int64(len(s))
	if l := int64(r.opt.MaxLineLength); l > 0 && end-r.lineStart > l {
		r.fail(ErrLineTooLong, r.lineStart+l)
	}
	if m := r.opt.MaxSize; m > 0 && r.size+int64(len(s)) > m {
		r.fail(ErrTooLarge, pos+m-r.size)
	}
	if r.err != nil {
		return
	}
	r.size += int64(len(s))
	if !r.drop {
		r.out = append(r.out, s...)
	}
}

// emit puts out s, which replaces the bare line ending at pos.
func (r *Reader) emit(s string, pos int64) {
	if r.err != nil {
		return
	}
	if m := r.opt.MaxSize; m > 0 && r.size+int64(len(s)) > m {
		r.fail(ErrTooLarge, pos)
		return
	}
	r.size += int64(len(s))
	if !r.drop {
		r.pend = s
		r.flush()
	}
}

// endLine ends the current line before offset end, at a bare CR or LF.
func (r *Reader) endLine(end int64) {
	if l := int64(r.opt.MaxLineLength); l > 0 && end-r.lineStart > l {
		r.fail(ErrLineTooLong, r.lineStart+l)
	}
	r.lineStart = end
}

// bare reports a bare line ending unless it is to be normalized.
func (r *Reader) bare(kind error, pos int64) {
	if !r.opt.Normalize {
		r.fail(kind, pos)
	}
}

// fail records a violation if it comes before the one recorded.
func (r *Reader) fail(kind error, pos int64) {
	if e := r.err; e != nil && (e.Offset < pos || e.Offset == pos && rank(e.Kind) <= rank(kind)) {
		return
	}
	r.err = &Error{Kind: kind, Offset: pos}
	r.pend = ""
}
