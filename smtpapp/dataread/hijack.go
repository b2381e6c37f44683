package dataread

import (
	"bufio"
	"io"
	"reflect"
	"strings"
	"sync"
	"unsafe"
)

// Hijack exists because go-smtp v0.25.1 offers no way to read DATA other
// than its own dataReader, which reads one byte at a time and passes bare CR,
// bare LF and NUL on. Its Conn.handleData does, in this order:
//
//	r := newDataReader(c)
//	... c.Session().Data(r) ...
//	r.limited = false
//	io.Copy(ioutil.Discard, r) // Make sure all the data has been consumed
//
// so a Session.Data that reads the bufio.Reader itself, up to and including
// the end-of-data line, and then puts the dataReader into its end state,
// leaves go-smtp exactly where it would have been with its own reader.

// The layout of go-smtp's dataReader (data.go, v0.25.1):
//
//	type dataReader struct {
//		r     *bufio.Reader
//		state int
//		limited bool
//		n       int64 // Maximum bytes remaining
//	}
//
// and the states, constants declared inside (*dataReader).Read:
// stateBeginLine = iota (0), stateDot, stateDotCR, stateCR, stateData,
// stateEOF (5). In stateEOF, Read reads nothing and returns io.EOF.
const (
	goSMTPPath     = "github.com/emersion/go-smtp"
	stateBeginLine = 0
	stateEOF       = 5
)

// fieldSpec is a field that a struct of go-smtp must have.
type fieldSpec struct {
	name string
	typ  reflect.Type
}

var dataReaderFields = []fieldSpec{
	{"r", reflect.TypeFor[*bufio.Reader]()},
	{"state", reflect.TypeFor[int]()},
	{"limited", reflect.TypeFor[bool]()},
	{"n", reflect.TypeFor[int64]()},
}

var layout struct {
	once sync.Once
	typ  reflect.Type // *smtp.dataReader
	ok   bool         // it has the layout and the behaviour we rely on
}

// Hijack takes the connection's *bufio.Reader out of r, the reader that
// go-smtp's Conn passes to Session.Data for a DATA command, positioned right
// after the 354 reply. Read the message from br with [NewReader], read it to
// its end ([Reader.Drain]), then call finish before Data returns: finish puts
// go-smtp's reader into its end state, so that go-smtp consumes nothing more
// and reads the next command. Calling finish before the end of data would
// let go-smtp read the rest of the message as commands; not calling it would
// let go-smtp read the next commands as message. Do not read r itself.
// go-smtp's Server.MaxMessageBytes is enforced by its reader, which is not
// used: set Options.MaxSize to the same value.
//
// Until finish, Hijack also lifts go-smtp's Server.MaxLineLength, which
// go-smtp checks byte by byte below the bufio.Reader (see linelimit.go):
// set Options.MaxLineLength to the same value, so that message lines stay
// bounded. finish puts the limit back, with the count it would have reached
// on the bytes read ahead of the next command; if those bytes hold a line
// over the limit, finish discards them and the next read fails with go-smtp's
// ErrTooLongLine, so a command line is limited as it always was. Where the
// limit cannot be lifted (a Server.Debug writer sits below the bufio.Reader,
// or go-smtp's reader has changed), it stays in force during DATA as before:
// a line over it ends the connection.
//
// Hijack returns ok = false, and touches nothing, if r is not go-smtp's
// dataReader (BDAT content comes through an io.Pipe: use [NewChunkChecker]),
// if r has already been read, or if the dataReader differs from the one of
// go-smtp v0.25.1 in type name, fields or end state; the layout is checked
// once, on first use, including a trial run of go-smtp's Read. The caller
// then reads r with go-smtp's reader and checks it with NewChunkChecker,
// which refuses the same line endings and NUL but has no dot-stuffing or
// end-of-data rule of its own (go-smtp's are lossy: see the package
// documentation).
func Hijack(r io.Reader) (br *bufio.Reader, finish func(), ok bool) {
	t := reflect.TypeOf(r)
	if !isGoSMTPType(t, "dataReader") {
		return nil, nil, false
	}
	layout.once.Do(func() {
		layout.typ = t
		layout.ok = checkLayout(t)
	})
	if t != layout.typ || !layout.ok {
		return nil, nil, false
	}
	v := reflect.ValueOf(r)
	if v.IsNil() {
		return nil, nil, false
	}
	bp, sp := fields(v)
	if *bp == nil || *sp != stateBeginLine {
		return nil, nil, false
	}
	br = *bp
	restore := liftLineLimit(br)
	return br, func() {
		*sp = stateEOF
		restore()
	}, true
}

// isGoSMTPType reports whether t is a pointer to go-smtp's type name.
func isGoSMTPType(t reflect.Type, name string) bool {
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().Name() == name && t.Elem().PkgPath() == goSMTPPath
}

// fields returns pointers to the r and state fields of the dataReader that
// v (a *smtp.dataReader) points to.
func fields(v reflect.Value) (**bufio.Reader, *int) {
	e := v.Elem()
	return (**bufio.Reader)(unsafe.Pointer(e.Field(0).UnsafeAddr())),
		(*int)(unsafe.Pointer(e.Field(1).UnsafeAddr()))
}

// checkLayout reports whether t, a pointer to a struct named dataReader, has
// the fields of go-smtp v0.25.1 and its Read stops in stateEOF after the end
// line, reads nothing more in it, and leaves what follows unread.
func checkLayout(t reflect.Type) (ok bool) {
	v, dr, ok := trialValue(t, dataReaderFields)
	if !ok {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	bp, sp := fields(v)
	*bp = bufio.NewReader(strings.NewReader("a\r\n.\r\nX"))
	got, err := io.ReadAll(dr)
	if err != nil || string(got) != "a\r\n" || *sp != stateEOF || (*bp).Buffered() != 1 {
		return false
	}
	*bp = bufio.NewReader(strings.NewReader("b"))
	if n, err := dr.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		return false
	}
	c, err := (*bp).ReadByte()
	return err == nil && c == 'b'
}

// trialValue returns a new zero struct of the type that t points to, as a
// reflect.Value and as an io.Reader, if the struct has exactly the fields
// want and *t is a Reader.
func trialValue(t reflect.Type, want []fieldSpec) (reflect.Value, io.Reader, bool) {
	e := t.Elem()
	if e.Kind() != reflect.Struct || e.NumField() != len(want) {
		return reflect.Value{}, nil, false
	}
	for i, w := range want {
		if f := e.Field(i); f.Name != w.name || f.Type != w.typ {
			return reflect.Value{}, nil, false
		}
	}
	v := reflect.New(e)
	r, ok := v.Interface().(io.Reader)
	return v, r, ok
}
