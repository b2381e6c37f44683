package dataread

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"unsafe"
)

// lineLimitReader is how go-smtp v0.25.1 enforces Server.MaxLineLength: the
// bufio.Reader of its Conn reads from a struct { io.Reader; io.Writer;
// io.Closer } (conn.go, init) whose Reader is a
//
//	type lineLimitReader struct {
//		R         io.Reader
//		LineLimit int
//		curLineLength int
//	}
//
// (lengthlimit_reader.go) whose Read goes over every byte it returns to count
// the length of the current line, unless LineLimit is 0; an LF sets the count
// to 1, every other byte adds 1, and a count over LineLimit fails the Read
// (and every later Read) with ErrTooLongLine. Our Reader counts the lines of
// DATA itself, chunk by chunk, so the byte loop below it is paid for nothing.
// go-smtp itself sets LineLimit to 0 while it copies a BDAT chunk.
var lineLimitFields = []fieldSpec{
	{"R", reflect.TypeFor[io.Reader]()},
	{"LineLimit", reflect.TypeFor[int]()},
	{"curLineLength", reflect.TypeFor[int]()},
}

var lineLimitLayout struct {
	once sync.Once
	typ  reflect.Type // *smtp.lineLimitReader
	ok   bool         // it has the layout and the behaviour we rely on
}

// bufioRd is the offset of bufio.Reader's rd field (its source), if it has
// one of type io.Reader.
var bufioRd, bufioRdOK = bufioReaderRd()

// liftLineLimit sets the LineLimit of the lineLimitReader below br to 0 and
// returns what puts it back; if br does not read from one, or it differs
// from the one described above, it changes nothing and returns a no-op.
func liftLineLimit(br *bufio.Reader) (restore func()) {
	if !bufioRdOK {
		return func() {}
	}
	rd := lineLimitSource(*(*io.Reader)(unsafe.Add(unsafe.Pointer(br), bufioRd)))
	t := reflect.TypeOf(rd)
	if !isGoSMTPType(t, "lineLimitReader") {
		return func() {}
	}
	lineLimitLayout.once.Do(func() {
		lineLimitLayout.typ = t
		lineLimitLayout.ok = checkLineLimitLayout(t)
	})
	if t != lineLimitLayout.typ || !lineLimitLayout.ok {
		return func() {}
	}
	v := reflect.ValueOf(rd)
	if v.IsNil() {
		return func() {}
	}
	limit, cur := lineLimitCounters(v)
	saved := *limit
	*limit = 0
	return func() {
		// What go-smtp would have counted on the bytes read ahead, from the
		// LF that ended the data on.
		tail, _ := br.Peek(br.Buffered())
		n, over := tailLineLength(tail, saved)
		if over {
			br.Discard(len(tail))
			n = saved + 1 // the next Read fails with ErrTooLongLine
		}
		*limit, *cur = saved, n
	}
}

// connRWC is what go-smtp's Conn.init gives textproto.NewConn, whose
// bufio.Reader therefore reads from it.
type connRWC = struct {
	io.Reader
	io.Writer
	io.Closer
}

// lineLimitSource returns the Reader of rd if it is a connRWC, else rd.
func lineLimitSource(rd io.Reader) io.Reader {
	if rwc, ok := rd.(connRWC); ok {
		return rwc.Reader
	}
	return rd
}

func bufioReaderRd() (uintptr, bool) {
	f, ok := reflect.TypeFor[bufio.Reader]().FieldByName("rd")
	return f.Offset, ok && f.Type == reflect.TypeFor[io.Reader]()
}

// lineLimitCounters returns pointers to the LineLimit and curLineLength
// fields of the lineLimitReader that v (a *smtp.lineLimitReader) points to.
func lineLimitCounters(v reflect.Value) (limit, cur *int) {
	e := v.Elem()
	return (*int)(unsafe.Pointer(e.Field(1).UnsafeAddr())), (*int)(unsafe.Pointer(e.Field(2).UnsafeAddr()))
}

// tailLineLength returns the count that go-smtp's lineLimitReader reaches
// on tail, read right after an LF, and whether it passes limit on the way
// (never when limit is 0: no limit).
func tailLineLength(tail []byte, limit int) (n int, over bool) {
	n = 1 // the LF
	for {
		i := bytes.IndexByte(tail, '\n')
		if i < 0 {
			n += len(tail)
			return n, limit > 0 && n > limit
		}
		if limit > 0 && n+i > limit {
			return n + i, true
		}
		n, tail = 1, tail[i+1:]
	}
}

// checkLineLimitLayout reports whether t, a pointer to a struct named
// lineLimitReader, has the fields described above, counts as described,
// fails past the limit and counts nothing with LineLimit 0.
func checkLineLimitLayout(t reflect.Type) (ok bool) {
	v, lr, ok := trialValue(t, lineLimitFields)
	if !ok {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	src := (*io.Reader)(unsafe.Pointer(v.Elem().Field(0).UnsafeAddr()))
	limit, cur := lineLimitCounters(v)
	buf := make([]byte, 16)

	*src, *limit = strings.NewReader("ab\ncd"), 3
	if n, err := lr.Read(buf); n != 5 || err != nil || *cur != 3 {
		return false
	}
	*limit = 2 // the count is past the limit now
	if n, err := lr.Read(buf); n != 0 || err == nil || errors.Is(err, io.EOF) {
		return false
	}
	*src, *limit = strings.NewReader("xy\nz"), 0
	if n, err := lr.Read(buf); n != 4 || err != nil || *cur != 3 {
		return false
	}
	return true
}
