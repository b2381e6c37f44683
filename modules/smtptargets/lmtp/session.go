package lmtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// session delivers queued messages over one LMTP connection, one
// transaction after the other. It implements queue.Session.
type session struct {
	conn    *conn
	metrics smtpapp.DeliveryMetrics
	remote  string // the server's name for logs and DSNs
	broken  bool   // the connection cannot carry another transaction
}

// Usable implements queue.Session.
func (s *session) Usable() bool { return !s.broken }

// Close implements queue.Session: QUIT, then close.
func (s *session) Close() error {
	s.conn.close()
	return nil
}

// LogFields implements queue.Session.
func (s *session) LogFields() []zap.Field {
	r := s.conn.result
	fields := []zap.Field{zap.String("target", "lmtp"), zap.String("lmtp", s.remote), zap.Bool("tls", r.TLS)}
	if r.TLS {
		fields = append(fields, zap.String("tls_version", r.Version), zap.String("tls_cipher", r.Cipher),
			zap.Bool("tls_verified", r.Verified))
	}
	if r.Fallback != "" && !s.conn.local {
		fields = append(fields, zap.String("tls_fallback", r.Fallback))
	}
	return fields
}

// Deliver implements queue.Session: MAIL, one RCPT per recipient, DATA,
// then one reply per accepted recipient (RFC 2033 4.2).
func (s *session) Deliver(ctx context.Context, m *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	res := s.deliver(ctx, m, rcpts)
	label := "plaintext"
	switch {
	case s.conn.local:
		label = "local"
	case s.conn.result.TLS:
		label = "tls"
	}
	s.metrics.CountDeliveries(res, label, s.conn.result.Policy)
	return res
}

func (s *session) deliver(ctx context.Context, m *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	res := make([]queue.Result, len(rcpts))
	failFrom := func(from int, err error) {
		for i := from; i < len(rcpts); i++ {
			res[i] = queue.Result{Err: err, RemoteMTA: s.remote}
		}
	}
	if err := ctx.Err(); err != nil {
		failFrom(0, queue.TempFail("delivery cancelled", err))
		return res
	}
	c := s.conn.client
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	utf8, _ := c.Extension("SMTPUTF8")
	if m.SMTPUTF8 && !utf8 && !asciiEnvelope(m, rcpts) {
		failFrom(0, &queue.DeliveryError{Code: 553, Enhanced: "5.6.7",
			Message: "the LMTP server does not support SMTPUTF8, which this message needs"})
		return res
	}
	body, err := m.OpenBody()
	if err != nil {
		failFrom(0, queue.TempFail("opening queued message", err))
		return res
	}
	defer body.Close()

	// REQUIRETLS is not passed on: this is the final delivery, not a
	// relay hop (RFC 8689 covers the SMTP hops to here). DSN parameters
	// go along when the server supports DSN; go-smtp drops them
	// otherwise.
	opts := &smtp.MailOptions{Size: m.DataSize(), Body: smtp.BodyType(m.Body), UTF8: m.SMTPUTF8 && utf8,
		Return: smtp.DSNReturn(m.Ret), EnvelopeID: m.EnvID}
	if err := c.Mail(m.From, opts); err != nil {
		failFrom(0, s.replyError(err, "sender refused"))
		s.reset()
		return res
	}
	// first maps each address to its first recipient: go-smtp reports
	// the replies after the data by address, so an address is sent once.
	first := make(map[string]int, len(rcpts))
	var accepted []int
	for i, r := range rcpts {
		if j, dup := first[r.Addr]; dup {
			res[i].Err = errDuplicate(j)
			continue
		}
		first[r.Addr] = i
		if err := c.Rcpt(r.Addr, rcptOptions(r)); err != nil {
			res[i] = queue.Result{Err: s.replyError(err, "recipient refused"), RemoteMTA: s.remote}
			if s.broken {
				// No data will follow: the recipients accepted so far
				// and those not yet sent wait for the next attempt.
				failFrom(i+1, res[i].Err)
				for _, j := range accepted {
					res[j] = res[i]
				}
				break
			}
			continue
		}
		accepted = append(accepted, i)
	}
	switch {
	case s.broken:
	case len(accepted) > 0:
		s.data(c, body, rcpts, accepted, res)
	default:
		s.reset()
	}
	for i := range res {
		if j, ok := res[i].Err.(errDuplicate); ok {
			res[i] = res[j]
		}
	}
	return res
}

// data sends the message and reads one reply per accepted recipient.
func (s *session) data(c *smtp.Client, body io.Reader, rcpts []*queue.Recipient, accepted []int, res []queue.Result) {
	fail := func(err error) {
		for _, i := range accepted {
			res[i] = queue.Result{Err: err, RemoteMTA: s.remote}
		}
	}
	w, err := c.Data()
	if err != nil {
		fail(s.replyError(err, "data refused"))
		s.reset()
		return
	}
	if _, err := io.Copy(w, body); err != nil {
		s.broken = true
		fail(queue.TempFail("sending message data", err))
		return
	}
	replies, err := w.CloseWithLMTPResponse()
	// err is nil, the refusals (an LMTPDataError), or a broken connection
	// (possibly joined with the refusals read before it broke).
	var refused smtp.LMTPDataError
	errors.As(err, &refused)
	if _, onlyRefusals := err.(smtp.LMTPDataError); err != nil && !onlyRefusals {
		s.broken = true
	}
	for _, i := range accepted {
		addr := rcpts[i].Addr
		switch {
		case replies[addr] != nil:
			res[i] = queue.Result{Reply: "250 " + replies[addr].StatusText, RemoteMTA: s.remote, Action: "delivered"}
		case refused[addr] != nil:
			res[i] = queue.Result{Err: s.replyError(refused[addr], "delivery refused"), RemoteMTA: s.remote}
		default:
			// The connection broke before this recipient's reply: the
			// server may or may not have delivered. Retry (a duplicate
			// is better than a loss).
			res[i] = queue.Result{Err: &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.2",
				Message: "connection to the LMTP server lost before its reply", Err: err}, RemoteMTA: s.remote}
		}
	}
}

// errDuplicate marks a recipient whose address came earlier in the same
// transaction, at the index it holds; it gets that recipient's result.
type errDuplicate int

func (errDuplicate) Error() string { return "duplicate recipient" }

// rcptOptions are the DSN parameters of a recipient; go-smtp sends them
// only to a server that supports DSN.
func rcptOptions(r *queue.Recipient) *smtp.RcptOptions {
	ro := &smtp.RcptOptions{}
	for _, n := range r.Notify {
		ro.Notify = append(ro.Notify, smtp.DSNNotify(n))
	}
	if typ, addr, ok := strings.Cut(r.ORCPT, ";"); ok {
		ro.OriginalRecipientType, ro.OriginalRecipient = smtp.DSNAddressType(typ), addr
	}
	return ro
}

// reset ends a failed transaction; a connection that cannot even do that
// is not used again.
func (s *session) reset() {
	if !s.broken && s.conn.client.Reset() != nil {
		s.broken = true
	}
}

// replyError turns what go-smtp returned into a delivery error: a reply
// keeps its class (5xx permanent, others temporary); anything else means
// the connection is gone (temporary).
func (s *session) replyError(err error, what string) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		s.broken = true
		return &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.2",
			Message: what + ": connection to the LMTP server lost", Err: err}
	}
	if se.Code == 421 {
		s.broken = true // the server is closing the connection
	}
	return replyError(se)
}

// replyError turns an LMTP reply into a delivery error that carries the
// server's code, enhanced code and text.
func replyError(se *smtp.SMTPError) *queue.DeliveryError {
	class := se.Code / 100
	enh := fmt.Sprintf("%d.0.0", class)
	if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != smtp.EnhancedCodeNotSet {
		enh = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return &queue.DeliveryError{Temporary: class != 5, Code: se.Code, Enhanced: enh, Message: se.Message}
}

// asciiEnvelope reports whether the sender and the recipients are ASCII
// addresses, which a server without SMTPUTF8 takes even for a message
// flagged SMTPUTF8.
func asciiEnvelope(m *queue.Message, rcpts []*queue.Recipient) bool {
	nonASCII := func(r rune) bool { return r >= utf8.RuneSelf }
	return !strings.ContainsFunc(m.From, nonASCII) &&
		!slices.ContainsFunc(rcpts, func(r *queue.Recipient) bool { return strings.ContainsFunc(r.Addr, nonASCII) })
}

// Interface guards
var _ queue.Session = (*session)(nil)
