package tlsupgrade

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/textproto"
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
	buf := *bp
	defer c.wire.Conn.SetDeadline(time.Time{})
	for {
		n, rerr := io.ReadFull(r, buf)
		last := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
		if rerr != nil && !last {
			return nil, fmt.Errorf("reading the message: %w", rerr)
		}
		cmd := fmt.Sprintf("BDAT %d", n)
		if last {
			cmd += " LAST"
		}
		if _, err := io.WriteString(c.wire, cmd+"\r\n"); err != nil {
			return nil, err
		}
		if _, err := c.wire.Write(buf[:n]); err != nil {
			return nil, err
		}
		c.wire.Conn.SetReadDeadline(time.Now().Add(c.wire.writeTimeout))
		_, msg, err := replies.ReadResponse(250)
		if err != nil {
			return nil, replyError(err)
		}
		if last {
			return parseReply(250, msg), nil
		}
	}
}
