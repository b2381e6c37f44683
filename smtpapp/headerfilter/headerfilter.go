// Package headerfilter drops header fields from a message as it streams:
// the Authentication-Results fields that claim our authserv-id on the way
// in, and the fields a check replaces on the way out.
package headerfilter

import (
	"bytes"
	"io"
	"strings"
)

// Writer passes a message on to W but for the header fields it is told
// to drop: fields whose name Hold accepts are held back until they end (or
// grow past 16 KiB) and then given to Drop, which decides. Folded fields,
// long lines and any split of the data into writes are handled; the body
// passes as it is.
type Writer struct {
	w       io.Writer
	hold    func(name string) bool
	drop    func(field []byte) bool
	body    bool   // past the header section
	line    []byte // the current line, up to its LF
	field   []byte // a held field (first line and continuations)
	holding bool
	dropped bool // the field of the continuation lines that follow was dropped
	rest    int  // for the tail of a long line already decided: restWrite or restDrop
	removed int
}

const (
	restNone = iota
	restWrite
	restDrop
)

// maxHeldField bounds a held field and a buffered line: past it, the
// field is decided on what was seen.
const maxHeldField = 16 << 10

// New returns a Writer to w that drops the fields named as hold accepts
// (case is the caller's affair) for which drop says so.
func New(w io.Writer, hold func(name string) bool, drop func(field []byte) bool) *Writer {
	return &Writer{w: w, hold: hold, drop: drop}
}

// Removed is the number of fields dropped so far.
func (f *Writer) Removed() int { return f.removed }

func (f *Writer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && !f.body {
		i := bytes.IndexByte(p, '\n')
		if f.rest != restNone {
			end := len(p)
			if i >= 0 {
				end = i + 1
			}
			if f.rest == restWrite {
				if _, err := f.w.Write(p[:end]); err != nil {
					return 0, err
				}
			}
			if i >= 0 {
				f.rest = restNone
			}
			p = p[end:]
			continue
		}
		if i < 0 {
			f.line = append(f.line, p...)
			p = nil
			if len(f.line) > maxHeldField {
				drop, err := f.endLine(false)
				if err != nil {
					return 0, err
				}
				f.rest = restWrite
				if drop {
					f.rest = restDrop
				}
			}
			break
		}
		f.line = append(f.line, p[:i+1]...)
		p = p[i+1:]
		if _, err := f.endLine(true); err != nil {
			return 0, err
		}
	}
	if len(p) > 0 {
		if _, err := f.w.Write(p); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// endLine handles f.line, a whole line when complete, else the start of a
// long one (whose field is then decided at once). drop reports whether
// the line was dropped.
func (f *Writer) endLine(complete bool) (drop bool, err error) {
	line := f.line
	f.line = f.line[:0]
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') { // a continuation line
		switch {
		case f.holding:
			f.field = append(f.field, line...)
			if !complete || len(f.field) > maxHeldField {
				err = f.decide()
			}
			return f.dropped, err
		case f.dropped:
			return true, nil
		}
		_, err = f.w.Write(line)
		return false, err
	}
	if err := f.decide(); err != nil {
		return false, err
	}
	f.dropped = false
	if complete && (string(line) == "\r\n" || string(line) == "\n") {
		f.body = true
		_, err = f.w.Write(line)
		return false, err
	}
	if name, _, ok := bytes.Cut(line, []byte(":")); ok && f.hold(strings.TrimSpace(string(name))) {
		f.field = append(f.field[:0], line...)
		f.holding = true
		if !complete || len(f.field) > maxHeldField {
			err = f.decide()
		}
		return f.dropped, err
	}
	_, err = f.w.Write(line)
	return false, err
}

// decide writes or drops the held field.
func (f *Writer) decide() error {
	if !f.holding {
		return nil
	}
	f.holding = false
	if f.drop(f.field) {
		f.removed++
		f.dropped = true
		return nil
	}
	_, err := f.w.Write(f.field)
	return err
}

// Flush writes what is held at the end of the message.
func (f *Writer) Flush() error {
	if len(f.line) > 0 && f.rest == restNone && !f.body {
		if _, err := f.endLine(false); err != nil {
			return err
		}
	}
	return f.decide()
}

// NewReader returns a reader of r with the fields dropped as New's Writer
// drops them.
func NewReader(r io.Reader, hold func(name string) bool, drop func(field []byte) bool) io.Reader {
	fr := &reader{src: r, tmp: make([]byte, 32<<10)}
	fr.f = New(&fr.buf, hold, drop)
	return fr
}

type reader struct {
	src io.Reader
	f   *Writer
	buf bytes.Buffer
	tmp []byte
	eof bool
}

func (r *reader) Read(p []byte) (int, error) {
	for r.buf.Len() == 0 && !r.eof {
		if r.f.body {
			return r.src.Read(p) // past the header section: as it is
		}
		n, err := r.src.Read(r.tmp)
		if n > 0 {
			if _, werr := r.f.Write(r.tmp[:n]); werr != nil {
				return 0, werr
			}
		}
		if err == io.EOF {
			if ferr := r.f.Flush(); ferr != nil {
				return 0, ferr
			}
			r.eof = true
		} else if err != nil {
			return 0, err
		}
	}
	if r.buf.Len() == 0 {
		return 0, io.EOF
	}
	return r.buf.Read(p)
}
