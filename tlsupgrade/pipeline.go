package tlsupgrade

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// A pipelined transaction (RFC 2920 with RFC 3030): MAIL, every RCPT and
// the first BDAT chunk of the message go to the server in one write, and
// the replies are read after it. Lock step costs a round trip and a write
// per command (four for a small message with DATA); this costs one. BDAT
// makes it safe: a chunk has its length in front, so the server reads it
// as data whatever it answered to MAIL and RCPT, where DATA would have to
// wait for its 354.

// ErrNoPipelining is what SendPipelined returns, having sent nothing, when
// the server offers PIPELINING or CHUNKING not, or when an option cannot
// be written by this client (the caller then uses Client.Mail and Rcpt).
var ErrNoPipelining = errors.New("the server does not offer PIPELINING and CHUNKING")

// maxCommand is the most a MAIL or RCPT line we write may take: RFC 5321
// 4.5.3.1.4 (512 octets) plus the extensions' parameters (RFC 1870, 3461,
// 6531, 8689), as go-smtp counts them.
const maxCommand = 2048

// TxResult is the server's answers to a pipelined transaction.
type TxResult struct {
	// Mail is the refusal of MAIL, nil when it was accepted. When it is
	// set, the whole transaction failed with it (the answers to RCPT,
	// "bad sequence" ones, say nothing about the recipients).
	Mail error
	// Rcpts has the refusal of each recipient, nil for those accepted.
	Rcpts []error
	// Data is the reply to the last chunk when it was accepted; DataErr
	// its refusal. Both are nil when no recipient was accepted.
	Data    *smtp.SMTPError
	DataErr error
}

// SendPipelined sends a mail transaction (see TxResult) in one write when
// the server offers PIPELINING and CHUNKING, with the message from body
// (as it is to arrive: lines ending in CRLF, nothing dot-stuffed). The
// rest of a message bigger than the first chunk follows in chunks of its
// own, each after the reply to the one before. An error is returned when
// the connection failed (it is not usable afterwards), or ErrNoPipelining
// when nothing was sent. After a refusal the caller resets the
// transaction (RSET) before the next.
func (c *Conn) SendPipelined(from string, mopts *smtp.MailOptions, rcpts []string, ropts []*smtp.RcptOptions, body io.Reader) (*TxResult, error) {
	if !c.CanPipeline() {
		return nil, ErrNoPipelining
	}
	cmds := make([]byte, 0, 128*(1+len(rcpts)))
	var err error
	if cmds, err = c.appendMail(cmds, from, mopts); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoPipelining, err)
	}
	for i, to := range rcpts {
		var ro *smtp.RcptOptions
		if i < len(ropts) {
			ro = ropts[i]
		}
		if cmds, err = c.appendRcpt(cmds, to, ro); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoPipelining, err)
		}
	}
	bp := chunkBuffers.Get().(*[]byte)
	defer chunkBuffers.Put(bp)
	buf := *bp
	// The commands go in front of the chunk in the same buffer, so that
	// one Write (one TLS record for a small message) carries all.
	const bdatLine = len("BDAT 1048576 LAST\r\n")
	head := len(cmds) + bdatLine
	if head > len(buf)/2 {
		return nil, fmt.Errorf("%w: %d recipients", ErrNoPipelining, len(rcpts))
	}
	n, last, err := readChunk(body, buf[head:])
	if err != nil {
		return nil, err
	}
	bdat := bdatCommand(n, last)
	start := head - len(bdat) - len(cmds)
	copy(buf[start:], cmds)
	copy(buf[start+len(cmds):], bdat)
	defer c.wire.Conn.SetDeadline(time.Time{})
	if _, err := c.wire.Write(buf[start : head+n]); err != nil {
		return nil, err
	}
	replies := textproto.NewReader(bufio.NewReaderSize(c.wire, 1024))
	c.wire.Conn.SetReadDeadline(time.Now().Add(c.wire.writeTimeout))
	res := &TxResult{Rcpts: make([]error, len(rcpts))}
	read := func(expect int) (*smtp.SMTPError, error) { return readReply(replies, expect) }
	if _, err := read(250); err != nil {
		res.Mail = err
	}
	accepted := 0
	for i := range rcpts {
		_, err := read(25)
		if res.Rcpts[i] = err; err == nil {
			accepted++
		}
	}
	reply, err := read(250)
	for _, e := range append([]error{res.Mail, err}, res.Rcpts...) {
		if e != nil && !isReply(e) {
			return nil, e
		}
	}
	if res.Mail != nil {
		return res, nil
	}
	if accepted == 0 {
		return res, nil
	}
	if err != nil {
		res.DataErr = err
		return res, nil
	}
	if last {
		res.Data = reply
		return res, nil
	}
	// The rest of a big message, chunk after chunk.
	if res.Data, err = c.sendChunks(replies, body, buf); err != nil {
		if !isReply(err) {
			return nil, err
		}
		res.DataErr = err
	}
	return res, nil
}

// isReply reports whether err is a server's reply rather than a failure
// of the connection.
func isReply(err error) bool {
	_, ok := errors.AsType[*smtp.SMTPError](err)
	return ok
}

// CanPipeline reports whether SendPipelined can send this connection's
// transactions: the server offers PIPELINING and CHUNKING.
func (c *Conn) CanPipeline() bool {
	if c.wire == nil {
		return false
	}
	p, _ := c.Client.Extension("PIPELINING")
	ch, _ := c.Client.Extension("CHUNKING")
	return p && ch
}

func (c *Conn) offers(ext string) bool {
	ok, _ := c.Client.Extension(ext)
	return ok
}

// appendMail appends the MAIL command for from and opts, with the
// parameters go-smtp's Client.Mail would send to this server.
func (c *Conn) appendMail(b []byte, from string, opts *smtp.MailOptions) ([]byte, error) {
	if strings.ContainsAny(from, "\r\n") {
		return nil, errors.New("a line must not contain CR or LF")
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	start := len(b)
	b = append(b, "MAIL FROM:<"...)
	b = append(b, from...)
	b = append(b, '>')
	if c.offers("8BITMIME") {
		b = append(b, " BODY=8BITMIME"...)
	}
	if opts.Size != 0 && c.offers("SIZE") {
		b = append(b, " SIZE="...)
		b = strconv.AppendInt(b, opts.Size, 10)
	}
	if opts.RequireTLS {
		if !c.offers("REQUIRETLS") {
			return nil, errors.New("the server does not support REQUIRETLS")
		}
		b = append(b, " REQUIRETLS"...)
	}
	if opts.UTF8 {
		if !c.offers("SMTPUTF8") {
			return nil, errors.New("the server does not support SMTPUTF8")
		}
		b = append(b, " SMTPUTF8"...)
	}
	if c.offers("DSN") {
		switch opts.Return {
		case smtp.DSNReturnFull, smtp.DSNReturnHeaders:
			b = append(b, " RET="...)
			b = append(b, opts.Return...)
		case "":
		default:
			return nil, errors.New("unknown RET parameter value")
		}
		if opts.EnvelopeID != "" {
			if !printableASCII(opts.EnvelopeID) {
				return nil, errors.New("malformed ENVID parameter value")
			}
			b = append(b, " ENVID="...)
			b = appendXtext(b, opts.EnvelopeID, xtextPlus)
		}
	}
	if opts.Auth != nil && c.offers("AUTH") {
		b = append(b, " AUTH="...)
		b = appendXtext(b, *opts.Auth, xtextPlus)
	}
	if len(b)-start > maxCommand {
		return nil, errors.New("MAIL command too long")
	}
	return append(b, "\r\n"...), nil
}

// appendRcpt appends the RCPT command for to and opts, with the
// parameters go-smtp's Client.Rcpt would send to this server. Options
// this client does not write (RRVS, DELIVERBY, MT-PRIORITY) are an error.
func (c *Conn) appendRcpt(b []byte, to string, opts *smtp.RcptOptions) ([]byte, error) {
	if strings.ContainsAny(to, "\r\n") {
		return nil, errors.New("a line must not contain CR or LF")
	}
	if opts == nil {
		opts = &smtp.RcptOptions{}
	}
	if !opts.RequireRecipientValidSince.IsZero() || opts.DeliverBy != nil || opts.MTPriority != nil {
		return nil, errors.New("RRVS, DELIVERBY and MT-PRIORITY are not written by this client")
	}
	start := len(b)
	b = append(b, "RCPT TO:<"...)
	b = append(b, to...)
	b = append(b, '>')
	if c.offers("DSN") {
		if len(opts.Notify) > 0 {
			if !validNotify(opts.Notify) {
				return nil, errors.New("malformed NOTIFY parameter value")
			}
			b = append(b, " NOTIFY="...)
			for i, v := range opts.Notify {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, v...)
			}
		}
		if opts.OriginalRecipient != "" {
			b = append(b, " ORCPT="...)
			b = append(b, opts.OriginalRecipientType...)
			b = append(b, ';')
			switch opts.OriginalRecipientType {
			case smtp.DSNAddressTypeRFC822:
				if !printableASCII(opts.OriginalRecipient) {
					return nil, errors.New("illegal ORCPT address")
				}
				b = appendXtext(b, opts.OriginalRecipient, xtextPlus)
			case smtp.DSNAddressTypeUTF8:
				// RFC 6533 3: utf-8-addr-unitext where the server takes
				// UTF-8, utf-8-addr-xtext elsewhere.
				mode := xtextUTF8Addr
				if c.offers("SMTPUTF8") {
					mode = unitextUTF8Addr
				}
				b = appendXtext(b, opts.OriginalRecipient, mode)
			default:
				return nil, errors.New("unknown ORCPT address type")
			}
		}
	}
	if len(b)-start > maxCommand {
		return nil, errors.New("RCPT command too long")
	}
	return append(b, "\r\n"...), nil
}

// The xtext forms: RFC 3461 4 ("+" and two hex digits), RFC 6533's
// utf-8-addr-xtext ("\x{HEX}" for every other character) and
// utf-8-addr-unitext (UTF-8 kept, "\x{HEX}" for other ASCII).
const (
	xtextPlus = iota
	xtextUTF8Addr
	unitextUTF8Addr
)

func appendXtext(b []byte, s string, mode int) []byte {
	for _, r := range s {
		switch {
		case r >= '!' && r <= '~' && r != '+' && r != '=':
			b = append(b, byte(r))
		case mode == xtextPlus:
			b = append(b, '+')
			b = append(b, strings.ToUpper(strconv.FormatInt(int64(r), 16))...)
		case mode == unitextUTF8Addr && r > 0x7f:
			b = append(b, string(r)...)
		default:
			b = append(b, `\x{`...)
			b = append(b, strings.ToUpper(strconv.FormatInt(int64(r), 16))...)
			b = append(b, '}')
		}
	}
	return b
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// validNotify: NEVER alone, or SUCCESS, FAILURE and DELAY, each at most
// once (RFC 3461 4.1).
func validNotify(v []smtp.DSNNotify) bool {
	seen := make(map[smtp.DSNNotify]bool)
	for _, n := range v {
		switch n {
		case smtp.DSNNotifyNever, smtp.DSNNotifySuccess, smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed:
		default:
			return false
		}
		if seen[n] {
			return false
		}
		seen[n] = true
	}
	return !seen[smtp.DSNNotifyNever] || len(seen) == 1
}
