package milter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/d--j/go-milter"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// fixed is a judge whose verdict was known before the message came.
type fixed smtpapp.Verdict

func (f fixed) Write(p []byte) (int, error)            { return len(p), nil }
func (f fixed) Finish(context.Context) smtpapp.Verdict { return smtpapp.Verdict(f) }
func (f fixed) Abort()                                 {}

// judge streams one message to the milter from a goroutine (run): Write
// hands it the pieces, which wait only while the milter has not taken
// the ones before.
type judge struct {
	s       *session
	in      chan []byte
	abort   chan struct{}
	once    sync.Once
	done    chan struct{} // closed when run returns; verdict is set then
	verdict smtpapp.Verdict
	decided smtpapp.Verdict // the milter's verdict during the body
}

var errAborted = errors.New("transfer aborted")

func newJudge(s *session) *judge {
	return &judge{s: s, in: make(chan []byte, 16), abort: make(chan struct{}), done: make(chan struct{})}
}

// Write passes a copy of p on; once the milter has decided (or failed),
// the rest of the message is dropped.
func (j *judge) Write(p []byte) (int, error) {
	select {
	case j.in <- bytes.Clone(p):
	case <-j.done:
	case <-j.abort:
	}
	return len(p), nil
}

// Abort stops the conversation: the connection to the milter is closed.
func (j *judge) Abort() {
	j.once.Do(func() {
		close(j.abort)
		j.s.interrupt()
	})
}

// Finish waits for the milter's verdict.
func (j *judge) Finish(ctx context.Context) smtpapp.Verdict {
	close(j.in)
	select {
	case <-j.done:
		return j.verdict
	case <-ctx.Done():
		j.Abort()
		<-j.done
		return j.s.m.failVerdict(fmt.Errorf("end of data: %w", ctx.Err()))
	}
}

// Read is the message as run reads it.
type chanReader struct {
	j   *judge
	buf []byte
}

func (r *chanReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		select {
		case b, ok := <-r.j.in:
			if !ok {
				return 0, io.EOF
			}
			r.buf = b
		case <-r.j.abort:
			return 0, errAborted
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// run holds the conversation from DATA to the end of the message.
func (j *judge) run() {
	defer close(j.done)
	s := j.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.decided(); ok {
		j.verdict = v
		return
	}
	v, err := j.converse(bufio.NewReaderSize(&chanReader{j: j}, chunkSize))
	if err != nil {
		select {
		case <-j.abort: // stopped by Abort or by Finish's deadline, which decides
			s.closeLocked()
		default:
			s.fail(err)
			v = smtpapp.Accept()
			if s.final != nil {
				v = *s.final
			}
		}
	}
	j.verdict = v
}

// converse sends the message and returns the milter's verdict.
func (j *judge) converse(r *bufio.Reader) (smtpapp.Verdict, error) {
	cs := j.s.cs
	act, err := cs.DataStart()
	if err != nil {
		return smtpapp.Verdict{}, fmt.Errorf("data: %w", err)
	}
	if v, end := ended(act, "data"); end {
		return v, nil
	}
	var fields []field
	var rest []byte
	for {
		f, more, err := readField(r)
		if err != nil {
			return smtpapp.Verdict{}, err
		}
		if f.name == "" {
			rest = more
			break
		}
		fields = append(fields, f)
		value := f.raw
		if !cs.ProtocolOption(milter.OptHeaderLeadingSpace) {
			value = strings.TrimPrefix(value, " ") // as Sendmail does
		}
		act, err := cs.HeaderField(f.name, value, nil)
		if err != nil {
			return smtpapp.Verdict{}, fmt.Errorf("header: %w", err)
		}
		if v, end := ended(act, "header"); end {
			return v, nil
		}
	}
	act, err = cs.HeaderEnd()
	if err != nil {
		return smtpapp.Verdict{}, fmt.Errorf("end of header: %w", err)
	}
	if v, end := ended(act, "end of header"); end {
		return v, nil
	}
	if err := j.sendBody(io.MultiReader(bytes.NewReader(rest), r)); err != nil {
		if errors.Is(err, errDecided) {
			return j.decided, nil
		}
		return smtpapp.Verdict{}, err
	}
	mods, act, err := cs.End()
	if err != nil {
		return smtpapp.Verdict{}, fmt.Errorf("end of data: %w", err)
	}
	if act.Type == milter.ActionAccept || act.Type == milter.ActionContinue {
		return j.apply(mods, fields), nil
	}
	v, _ := ended(act, "end of data")
	return v, nil
}

// errDecided: the milter decided during the body (judge.decided).
var errDecided = errors.New("decided")

// sendBody sends the body in chunks of chunkSize, as it arrives, until
// its end or until the milter skips the rest; an empty body is one empty
// chunk.
func (j *judge) sendBody(body io.Reader) error {
	cs := j.s.cs
	if cs.ProtocolOption(milter.OptNoBody) {
		_, err := cs.BodyChunk(nil) // sends nothing, moves on
		return err
	}
	buf := make([]byte, chunkSize)
	for first := true; ; first = false {
		n, err := io.ReadFull(body, buf)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
		if n == 0 && !first {
			return nil
		}
		act, err := cs.BodyChunk(buf[:n])
		if err != nil {
			return fmt.Errorf("body: %w", err)
		}
		if v, end := ended(act, "body"); end {
			j.decided = v
			return errDecided
		}
		if cs.Skip() || n < chunkSize {
			return nil
		}
	}
}

// ended maps an answer during the message: whether the milter has
// decided, and how.
func ended(act *milter.Action, stage string) (smtpapp.Verdict, bool) {
	switch act.Type {
	case milter.ActionContinue, milter.ActionSkip:
		return smtpapp.Verdict{}, false
	case milter.ActionAccept:
		return smtpapp.Accept(), true
	case milter.ActionDiscard:
		return discarded(), true
	}
	return replyVerdict(act, stage), true
}

// apply turns the milter's modifications into the verdict's header
// changes; fields are the message's header fields, in order.
func (j *judge) apply(mods []milter.ModifyAction, fields []field) smtpapp.Verdict {
	v := smtpapp.Accept()
	var changed []string // names of changed fields, canonical, in order
	current := make(map[string][]*string)
	names := make(map[string]string) // key -> the name put back
	for _, f := range fields {
		key := strings.ToLower(f.name)
		raw := f.raw
		current[key] = append(current[key], &raw)
	}
	for _, mod := range mods {
		switch mod.Type {
		case milter.ActionAddHeader, milter.ActionInsertHeader:
			v.Headers = append(v.Headers, headerField(mod.HeaderName, mod.HeaderValue))
		case milter.ActionChangeHeader:
			key := strings.ToLower(mod.HeaderName)
			if !slices.Contains(changed, key) {
				changed = append(changed, key)
				names[key] = canonicalName(key, mod.HeaderName, fields)
				v.RemoveHeaders = append(v.RemoveHeaders, mod.HeaderName)
			}
			value := mod.HeaderValue
			i := int(mod.HeaderIndex) - 1
			switch {
			case i >= 0 && i < len(current[key]) && mod.HeaderValue == "":
				current[key][i] = nil
			case i >= 0 && i < len(current[key]):
				current[key][i] = &value
			case mod.HeaderValue != "": // past the last occurrence: added
				current[key] = append(current[key], &value)
			}
		case milter.ActionQuarantine:
			v.Result = smtpapp.VerdictQuarantine
			v.Reason = "quarantined by milter: " + mod.Reason
		case milter.ActionReplaceBody:
			// The new body comes in pieces (SMFIR_REPLBODY), in order.
			if v.Body == nil {
				v.Body = []byte{}
			}
			v.Body = append(v.Body, mod.Body...)
		default:
			j.s.m.logger.Warn("milter asked for a modification that was not offered; ignored",
				zap.String("milter", j.s.m.Address), zap.String("modification", modName(mod.Type)))
		}
	}
	for _, key := range changed {
		for _, value := range current[key] {
			if value != nil {
				v.Headers = append(v.Headers, headerField(names[key], *value))
			}
		}
	}
	v.Note = v.Result
	if n := len(v.Headers); n > 0 {
		v.Note = fmt.Sprintf("%s, %d header fields added", v.Result, n)
	}
	if v.Body != nil {
		v.Note += ", body replaced"
	}
	return v
}

// canonicalName is the spelling of a field's name for the occurrences
// put back: as in the message, else as the milter wrote it.
func canonicalName(key, milterName string, fields []field) string {
	for _, f := range fields {
		if strings.ToLower(f.name) == key {
			return f.name
		}
	}
	return milterName
}

func modName(t milter.ModifyActionType) string {
	switch t {
	case milter.ActionReplaceBody:
		return "replace body"
	case milter.ActionChangeFrom:
		return "change sender"
	case milter.ActionAddRcpt, milter.ActionDelRcpt:
		return "change recipients"
	}
	return fmt.Sprintf("type %d", t)
}

// headerField is a field to add, with its value as the milter protocol
// carries it (the text after the colon, folding line breaks as LF or
// CRLF): kept folded, with CRLF, when it is well folded, so that a
// signature over the field holds (simple canonicalization); else
// unfolded. One leading space goes: the core writes "Name: ".
func headerField(name, raw string) smtpapp.HeaderField {
	v := strings.TrimPrefix(raw, " ")
	if !strings.ContainsAny(v, "\r\n") {
		return smtpapp.HeaderField{Name: name, Value: unfold(v)}
	}
	folded := strings.ReplaceAll(strings.ReplaceAll(v, "\r\n", "\n"), "\n", "\r\n")
	well := strings.Count(folded, "\r") == strings.Count(folded, "\r\n")
	for _, l := range strings.Split(folded, "\r\n")[1:] {
		if strings.TrimLeft(l, " \t") == "" || l[0] != ' ' && l[0] != '\t' {
			well = false
		}
	}
	if !well {
		return smtpapp.HeaderField{Name: name, Value: unfold(v)}
	}
	return smtpapp.HeaderField{Name: name, Value: folded, Folded: true}
}

// unfold makes a header value one line: line breaks are removed, the
// white space of the folding stays; leading white space goes.
func unfold(v string) string {
	v = strings.ReplaceAll(strings.ReplaceAll(v, "\r", ""), "\n", "")
	return strings.TrimLeft(v, " \t")
}

// field is a header field of the message: its name, and its value as
// the milter gets it: the text after the colon, folding line breaks as
// LF (as Sendmail and Postfix pass them), without the last line break.
type field struct {
	name, raw string
}

// readField reads the next header field. At the end of the header
// section it returns a field without a name: after the empty line, or
// with more set to a line that is not a header field (the body begins
// with it).
func readField(r *bufio.Reader) (f field, more []byte, err error) {
	line, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, bufio.ErrBufferFull):
		return field{}, bytes.Clone(line), nil
	case err != nil:
		return field{}, nil, err
	case string(line) == "\r\n" || string(line) == "\n":
		return field{}, nil, nil
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
		return field{}, bytes.Clone(line), nil
	}
	f.name = string(name)
	var b strings.Builder
	b.Write(bytes.TrimRight(value, "\r\n"))
	for {
		next, err := r.Peek(1)
		if err != nil || (next[0] != ' ' && next[0] != '\t') {
			break
		}
		cont, err := r.ReadSlice('\n')
		b.WriteString("\n")
		b.Write(bytes.TrimRight(cont, "\r\n"))
		if err != nil {
			break
		}
	}
	f.raw = b.String()
	return f, nil, nil
}
