package tlsupgrade

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// dataBuffer is the size of the buffers SendDATA reads the message into and
// writes the wire from: two TLS records.
const dataBuffer = 32 << 10

// dataSender is what SendDATA needs for one message, kept between messages.
type dataSender struct {
	in  []byte
	out *bufio.Writer
	dot dotStuffer
}

var dataSenders = sync.Pool{New: func() any {
	return &dataSender{in: make([]byte, dataBuffer), out: bufio.NewWriterSize(nil, dataBuffer)}
}}

// SendDATA sends a message body with DATA once Client has had MAIL and RCPT
// accepted: "DATA", the 354 reply, the body dot-stuffed (a run of lines at
// a time, not byte by byte as go-smtp's Client.Data does, with the same
// bytes on the wire: those of textproto's DotWriter), the end-of-data line,
// and the reply to it. Each reply is awaited for at most the CommandTimeout
// of Dial, each write too. It returns the final reply, or the error: an
// *smtp.SMTPError for a refusal (of DATA or of the message), another error
// if the connection failed or r could not be read: SendDATA then closes the
// connection if it was in the middle of the message, which no end line may
// end (the server would take a part of it for the whole). Afterwards the
// Client can start the next transaction (MAIL) or QUIT.
func (c *Conn) SendDATA(r io.Reader) (*smtp.SMTPError, error) {
	if c.wire == nil {
		return nil, errors.New("tlsupgrade: SendDATA on a Conn that Dial did not make")
	}
	// As in SendBDAT: the Client's reader holds nothing now.
	replies := textproto.NewReader(bufio.NewReaderSize(c.wire, 512))
	defer c.wire.Conn.SetDeadline(time.Time{})
	s := dataSenders.Get().(*dataSender)
	s.out.Reset(c.wire)
	defer func() {
		s.out.Reset(nil)
		dataSenders.Put(s)
	}()

	if _, err := io.WriteString(c.wire, "DATA\r\n"); err != nil {
		return nil, err
	}
	if _, err := c.awaitReply(replies, 354); err != nil {
		return nil, err
	}
	if err := s.send(r); err != nil {
		// The server is inside the message now: only closing the
		// connection keeps what comes next (a QUIT) out of it.
		c.Client.Close()
		return nil, err
	}
	return c.awaitReply(replies, 250)
}

// send writes r dot-stuffed to s.out, then the end-of-data line.
func (s *dataSender) send(r io.Reader) error {
	s.dot = dotStuffer{w: s.out}
	for {
		n, rerr := r.Read(s.in)
		if _, err := s.dot.Write(s.in[:n]); err != nil {
			return err
		}
		if rerr == io.EOF {
			return s.dot.Close()
		}
		if rerr != nil {
			return fmt.Errorf("reading the message: %w", rerr)
		}
	}
}

// awaitReply reads the server's next reply from replies, which reads the
// wire below the Client, within the CommandTimeout of Dial.
func (c *Conn) awaitReply(replies *textproto.Reader, code int) (*smtp.SMTPError, error) {
	c.wire.Conn.SetReadDeadline(time.Now().Add(c.wire.writeTimeout))
	return readReply(replies, code)
}

// dotStuffer writes to w the bytes that textproto's DotWriter writes for
// the same input (RFC 5321 4.5.2 dot-stuffing, LF made CR LF, and
// CR LF "." CR LF at the end), looking at the input a line at a time:
// only a line that starts with a dot, or ends with an LF that the
// DotWriter gives a CR, breaks the run of input written as it is.
type dotStuffer struct {
	w     *bufio.Writer
	state dotState
}

// dotState is where a dotStuffer is, as in textproto's dotWriter.
type dotState uint8

const (
	dotBegin     dotState = iota // nothing written yet
	dotLineStart                 // after an LF
	dotCR                        // after a CR that an LF ends the line with
	dotText                      // elsewhere
)

// Write implements io.Writer.
func (d *dotStuffer) Write(b []byte) (int, error) {
	run := 0 // b[run:c] is to be written as it is
	for c := 0; c < len(b); {
		if (d.state == dotBegin || d.state == dotLineStart) && b[c] == '.' {
			d.w.Write(b[run:c])
			d.w.WriteByte('.')
			run = c
			d.state = dotText
		}
		i := bytes.IndexByte(b[c:], '\n')
		if i < 0 {
			d.state = d.state.after(b[c:])
			break
		}
		if d.state.after(b[c:c+i]) != dotCR {
			d.w.Write(b[run : c+i])
			d.w.WriteByte('\r')
			run = c + i
		}
		d.state = dotLineStart
		c += i + 1
	}
	if _, err := d.w.Write(b[run:]); err != nil {
		return 0, err
	}
	return len(b), nil
}

// after returns the state after s, a run of bytes without LF that starts
// in state st. Only the CRs at the end of s matter: in textproto's
// dotWriter a CR puts it in dotCR, unless it is already there (then the CR
// is text, and an LF after it gets a CR of its own).
func (st dotState) after(s []byte) dotState {
	if len(s) == 0 {
		return st
	}
	crs := len(s) - len(bytes.TrimRight(s, "\r"))
	cr := crs%2 == 1
	if crs == len(s) && st == dotCR {
		cr = !cr
	}
	if cr {
		return dotCR
	}
	return dotText
}

// Close ends the message as textproto's DotWriter does: with CR LF unless
// it ends with one, then "." CR LF, and flushes w.
func (d *dotStuffer) Close() error {
	switch d.state {
	case dotBegin, dotText:
		d.w.WriteString("\r\n.\r\n")
	case dotCR:
		d.w.WriteString("\n.\r\n")
	case dotLineStart:
		d.w.WriteString(".\r\n")
	}
	return d.w.Flush()
}
