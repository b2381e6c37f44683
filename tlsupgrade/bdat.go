package tlsupgrade

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// bdatChunk is the most a BDAT chunk carries.
const bdatChunk = 1 << 20

// chunkBuffers keeps the chunk buffers between messages: a new 1 MiB
// buffer per message would cost more than the dot-stuffing saved.
var chunkBuffers = sync.Pool{New: func() any { b := make([]byte, bdatChunk); return &b }}

// ErrNoChunking is what SendBDAT returns when the server does not offer
// CHUNKING; the caller sends the message with DATA instead.
var ErrNoChunking = errors.New("the server does not offer CHUNKING")

// SendBDAT sends a message body with BDAT (RFC 3030) once Client has had
// MAIL and RCPT accepted: the bytes as they are, in chunks of up to 1 MiB,
// each chunk's reply read before the next is sent. Unlike DATA nothing is
// dot-stuffed or scanned byte by byte, so r must hold the message as it
// is to arrive (lines ending in CRLF). It returns the reply to the last
// chunk, or the error: an *smtp.SMTPError for a refusal. Afterwards the
// Client can start the next transaction (MAIL) or QUIT.
func (c *Conn) SendBDAT(r io.Reader) (*smtp.SMTPError, error) {
	if ok, _ := c.Client.Extension("CHUNKING"); !ok || c.wire == nil {
		return nil, ErrNoChunking
	}
	// The Client's reader holds nothing now: the server sends nothing
	// between the reply to RCPT and our next command.
	replies := textproto.NewReader(bufio.NewReaderSize(c.wire, 512))
	bp := chunkBuffers.Get().(*[]byte)
	defer chunkBuffers.Put(bp)
	return c.sendChunks(replies, r, *bp)
}

// sendChunks sends what is left of r with BDAT, in chunks of up to
// len(buf) bytes, each chunk's reply read before the next is sent; the
// last chunk is marked LAST. It returns the reply to the last chunk, or
// the error: an *smtp.SMTPError for a refusal.
func (c *Conn) sendChunks(replies *textproto.Reader, r io.Reader, buf []byte) (*smtp.SMTPError, error) {
	defer c.wire.Conn.SetDeadline(time.Time{})
	for {
		n, last, err := readChunk(r, buf)
		if err != nil {
			return nil, err
		}
		if _, err := io.WriteString(c.wire, bdatCommand(n, last)); err != nil {
			return nil, err
		}
		if _, err := c.wire.Write(buf[:n]); err != nil {
			return nil, err
		}
		reply, err := c.awaitReply(replies, 250)
		if err != nil || last {
			return reply, err
		}
	}
}

// readChunk fills buf from r as far as r goes: n bytes, and whether they
// are the last.
func readChunk(r io.Reader, buf []byte) (n int, last bool, err error) {
	n, err = io.ReadFull(r, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return n, true, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading the message: %w", err)
	}
	return n, false, nil
}

// bdatCommand is the BDAT command line for a chunk of n bytes.
func bdatCommand(n int, last bool) string {
	if last {
		return "BDAT " + strconv.Itoa(n) + " LAST\r\n"
	}
	return "BDAT " + strconv.Itoa(n) + "\r\n"
}

// readReply reads one reply: an *smtp.SMTPError when its code is not the
// one expected (see textproto.Reader.ReadResponse), another error when the
// connection failed.
func readReply(replies *textproto.Reader, expect int) (*smtp.SMTPError, error) {
	code, msg, err := replies.ReadResponse(expect)
	if err != nil {
		if _, ok := errors.AsType[*textproto.Error](err); !ok {
			return nil, err // the connection, not a reply
		}
		return nil, replyError(err)
	}
	return parseReply(code, msg), nil
}
