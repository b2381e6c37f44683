package smtpload

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// client is a minimal SMTP client: lock-step commands, no pipelining, with
// a deadline on every exchange. The load tool uses it instead of a library
// client to time exactly the exchanges it reports and to keep its own CPU
// use low (it shares the machine with the server being measured).
type client struct {
	nc      net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
	tls     bool
}

// ReplyError is an SMTP reply other than the one expected.
type ReplyError struct {
	Code int
	Text string
}

func (e *ReplyError) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Text) }

// dialClient connects, reads the greeting and says EHLO; with tlsConf it
// then upgrades with STARTTLS and says EHLO again.
func dialClient(ctx context.Context, addr, helo string, tlsConf *tls.Config, timeout time.Duration) (*client, error) {
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &stageError{stage: "connect", err: err}
	}
	c := &client{nc: nc, timeout: timeout}
	c.setConn(nc)
	if err := c.prelude(helo, tlsConf); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *client) setConn(nc net.Conn) {
	c.nc = nc
	c.r = bufio.NewReaderSize(nc, 4096)
	c.w = bufio.NewWriterSize(nc, 8192)
}

func (c *client) prelude(helo string, tlsConf *tls.Config) error {
	c.deadline()
	if _, _, err := c.expect(220); err != nil {
		return &stageError{stage: "greeting", err: err}
	}
	_, ehlo, err := c.cmd(250, "EHLO "+helo)
	if err != nil {
		return &stageError{stage: "ehlo", err: err}
	}
	if tlsConf == nil {
		return nil
	}
	if !hasExtension(ehlo, "STARTTLS") {
		return &stageError{stage: "starttls", err: errors.New("STARTTLS not offered")}
	}
	if _, _, err := c.cmd(220, "STARTTLS"); err != nil {
		return &stageError{stage: "starttls", err: err}
	}
	tc := tls.Client(c.nc, tlsConf)
	c.deadline()
	if err := tc.Handshake(); err != nil {
		return &stageError{stage: "handshake", err: err}
	}
	c.setConn(tc)
	c.tls = true
	if _, _, err := c.cmd(250, "EHLO "+helo); err != nil {
		return &stageError{stage: "ehlo", err: err}
	}
	return nil
}

func (c *client) deadline() { _ = c.nc.SetDeadline(time.Now().Add(c.timeout)) }

// cmd sends one command line and reads the reply.
func (c *client) cmd(want int, line string) (int, string, error) {
	c.deadline()
	if _, err := c.w.WriteString(line); err != nil {
		return 0, "", err
	}
	if _, err := c.w.WriteString("\r\n"); err != nil {
		return 0, "", err
	}
	if err := c.w.Flush(); err != nil {
		return 0, "", err
	}
	return c.expect(want)
}

// expect reads one (possibly multi-line) reply and checks its code.
func (c *client) expect(want int) (int, string, error) {
	var text strings.Builder
	for lines := 0; ; lines++ {
		if lines > 100 {
			return 0, "", errors.New("reply longer than 100 lines")
		}
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, "", err
		}
		if len(line) < 5 || line[3] != ' ' && line[3] != '-' {
			return 0, "", fmt.Errorf("malformed reply %q", line)
		}
		code, err := strconv.Atoi(string(line[:3]))
		if err != nil {
			return 0, "", fmt.Errorf("malformed reply %q", line)
		}
		if lines > 0 {
			text.WriteByte('\n')
		}
		text.Write(trimCRLF(line[4:]))
		if line[3] == ' ' {
			if code != want {
				return code, text.String(), &ReplyError{Code: code, Text: text.String()}
			}
			return code, text.String(), nil
		}
	}
}

// sendData writes a message that is already dot-stuffed and ends with
// CRLF, then the final ".", and returns when the reply came and how long
// the reply took after the "." was written.
func (c *client) sendData(msg []byte) (time.Duration, error) {
	c.deadline()
	if _, err := c.w.Write(msg); err != nil {
		return 0, err
	}
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := c.w.WriteString(".\r\n"); err != nil {
		return 0, err
	}
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	_, _, err := c.expect(250)
	return time.Since(start), err
}

// quit says QUIT (without waiting long for the reply) and closes.
func (c *client) quit() {
	_ = c.nc.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.w.WriteString("QUIT\r\n"); err == nil && c.w.Flush() == nil {
		_, _, _ = c.expect(221)
	}
	c.nc.Close()
}

func (c *client) close() { c.nc.Close() }

func trimCRLF(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// hasExtension reports whether an EHLO reply (lines after the first)
// names ext.
func hasExtension(ehlo, ext string) bool {
	lines := strings.Split(ehlo, "\n")
	for _, l := range lines[1:] {
		name, _, _ := strings.Cut(l, " ")
		if strings.EqualFold(name, ext) {
			return true
		}
	}
	return false
}

// stageError says where setting up a session failed.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// errorKey classifies an error for the summary: the reply code for SMTP
// replies ("451"), else what failed ("connect", "handshake", "timeout", "io").
func errorKey(err error) string {
	var re *ReplyError
	if errors.As(err, &re) {
		return strconv.Itoa(re.Code)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	var se *stageError
	if errors.As(err, &se) {
		return se.stage
	}
	return "io"
}
