// Package smtpclient is the outbound SMTP session that the relay and mx
// targets (and third-party SMTP targets) deliver queued messages over: one
// connection opened by tlsupgrade with STARTTLS per policy, one
// transaction after the other, per-recipient results.
package smtpclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// Session delivers queued messages over one outbound SMTP connection
// (opened by tlsupgrade with STARTTLS per policy), one transaction after the
// other. It implements queue.Session.
type Session struct {
	conn    *tlsupgrade.Conn
	metrics smtpapp.DeliveryMetrics
	// requireTLSOK: the host came from a DNSSEC-validated MX answer, an
	// MTA-STS policy lists it, or it is configured (a relay): RFC 8689's
	// condition on how the next hop was found.
	requireTLSOK bool
	host         string // the host we meant to reach, for logs and DSNs
	addr         string // the address connected to
	broken       bool   // the connection cannot carry another transaction
	dsn          bool   // the server supports DSN (RFC 3461)
}

// New makes a session of an open connection to host (the name we meant
// to reach, for logs and DSNs) at addr. requireTLSOK says whether the host
// was found in a way RFC 8689 accepts for REQUIRETLS mail: a
// DNSSEC-validated MX answer, an MTA-STS policy that lists it, or
// configuration (a relay). m counts the session's results.
func New(conn *tlsupgrade.Conn, host, addr string, m smtpapp.DeliveryMetrics, requireTLSOK bool) *Session {
	ok, _ := conn.Client.Extension("DSN")
	m.CountFallback(conn.Result)
	return &Session{conn: conn, host: host, addr: addr, dsn: ok, metrics: m, requireTLSOK: requireTLSOK}
}

// Usable implements queue.Session.
func (s *Session) Usable() bool { return !s.broken }

// Close implements queue.Session: QUIT, then close.
func (s *Session) Close() error { return s.conn.Close() }

// LogFields implements queue.Session: the host and the TLS outcome.
func (s *Session) LogFields() []zap.Field {
	r := s.conn.Result
	fields := []zap.Field{
		zap.String("mx", s.host),
		zap.String("addr", s.addr),
		zap.String("tls_policy", r.Policy),
		zap.Bool("tls", r.TLS),
	}
	if r.DANEVerified {
		fields = append(fields, zap.Bool("dane_verified", true))
	}
	if r.Failure != "" {
		fields = append(fields, zap.String("tls_policy_failure", r.Failure), zap.String("tls_policy_failure_reason", r.FailureReason))
	}
	if r.TLS {
		fields = append(fields,
			zap.String("tls_version", r.Version),
			zap.String("tls_cipher", r.Cipher),
			zap.Bool("tls_verified", r.Verified))
		if !r.Verified && r.VerifyError != "" {
			fields = append(fields, zap.String("tls_verify_error", r.VerifyError))
		}
	}
	if r.Fallback != "" {
		fields = append(fields, zap.String("tls_fallback", r.Fallback))
	}
	return fields
}

// Deliver implements queue.Session: MAIL, one RCPT per recipient, then
// the data, pipelined in one write with BDAT when the server offers
// PIPELINING and CHUNKING (as Postfix, Exchange and most large providers
// do), else in lock step with DATA (or BDAT for a big message).
// Recipients refused at RCPT get their own reply; the others share the
// reply to the data.
func (s *Session) Deliver(ctx context.Context, m *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	res := s.deliver(ctx, m, rcpts)
	tlsLabel := "plaintext"
	if s.conn.Result.TLS {
		tlsLabel = "tls"
	}
	s.metrics.CountDeliveries(res, tlsLabel, s.conn.Result.Policy)
	return res
}

func (s *Session) deliver(ctx context.Context, m *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	res := make([]queue.Result, len(rcpts))
	fail := func(idx []int, err error) {
		for _, i := range idx {
			res[i] = queue.Result{Err: err, RemoteMTA: s.host}
		}
	}
	all := make([]int, len(rcpts))
	for i := range all {
		all[i] = i
	}
	if err := ctx.Err(); err != nil {
		fail(all, queue.TempFail("delivery cancelled", err))
		return res
	}
	stop := context.AfterFunc(ctx, func() { s.conn.Client.Close() })
	defer stop()

	c := s.conn.Client
	utf8, _ := c.Extension("SMTPUTF8")
	if m.SMTPUTF8 && !utf8 && needsUTF8(m, rcpts) {
		fail(all, &queue.DeliveryError{Code: 553, Enhanced: "5.6.7",
			Message: "the next hop does not support SMTPUTF8, which this message needs"})
		return res
	}
	if m.RequireTLS {
		// RFC 8689 4.2.1: verified TLS to a properly found host that
		// itself supports REQUIRETLS; otherwise the message bounces.
		if err := s.conn.CheckRequireTLS(s.requireTLSOK); err != nil {
			fail(all, requireTLSError(err))
			return res
		}
	}
	body, err := m.OpenBody()
	if err != nil {
		fail(all, queue.TempFail("opening queued message", err))
		return res
	}
	defer body.Close()

	opts := &smtp.MailOptions{Size: m.DataSize(), Body: smtp.BodyType(m.Body), UTF8: m.SMTPUTF8 && utf8, RequireTLS: m.RequireTLS}
	if s.dsn {
		opts.Return = smtp.DSNReturn(m.Ret)
		opts.EnvelopeID = m.EnvID
	}
	if s.conn.CanPipeline() {
		if done := s.deliverPipelined(m, rcpts, opts, body, res); done {
			return res
		}
	}
	if err := c.Mail(m.From, opts); err != nil {
		fail(all, s.replyError(err))
		s.reset()
		return res
	}
	var accepted []int
	for i, r := range rcpts {
		if err := c.Rcpt(r.Addr, s.rcptOptions(r)); err != nil {
			res[i] = queue.Result{Err: s.replyError(err), RemoteMTA: s.host}
			if s.broken {
				// The connection is gone: the recipients after this one
				// were not tried, and those accepted before it got no
				// data. None is delivered.
				fail(all[i+1:], res[i].Err)
				fail(accepted, queue.TempFail("connection lost after RCPT", err))
				return res
			}
			continue
		}
		accepted = append(accepted, i)
	}
	if len(accepted) == 0 {
		s.reset()
		return res
	}
	statusText, err := s.send(body, m.DataSize())
	if err != nil {
		fail(accepted, err)
		return res
	}
	s.succeed(res, func(i int) bool { return slices.Contains(accepted, i) }, statusText)
	return res
}

// succeed records the final reply (its text: "2.0.0 OK") for the
// recipients that accepted says were accepted.
func (s *Session) succeed(res []queue.Result, accepted func(int) bool, statusText string) {
	action := "relayed" // the next hop cannot report for us
	if s.dsn {
		action = ""
	}
	reply := "250 " + statusText
	for i := range res {
		if accepted(i) {
			res[i] = queue.Result{Reply: reply, RemoteMTA: s.host, Action: action}
		}
	}
}

// rcptOptions are the RCPT parameters of r: its DSN parameters when the
// server takes them.
func (s *Session) rcptOptions(r *queue.Recipient) *smtp.RcptOptions {
	ro := &smtp.RcptOptions{}
	if s.dsn {
		for _, n := range r.Notify {
			ro.Notify = append(ro.Notify, smtp.DSNNotify(n))
		}
		if typ, addr, ok := strings.Cut(r.ORCPT, ";"); ok {
			ro.OriginalRecipientType, ro.OriginalRecipient = smtp.DSNAddressType(typ), addr
		}
	}
	return ro
}

// bdatMin is the size from which a message goes with BDAT in lock step
// (a server without PIPELINING): below it, DATA costs no more (measured
// with bench's BenchmarkGatewayRelay: at 4 KiB the two are even, at 100
// KiB BDAT halves the relay's CPU).
const bdatMin = 32 << 10

// send transfers the body of a transaction whose recipients were
// accepted: with BDAT when it is big and the next hop offers CHUNKING (the
// spool's bytes as they are), else with DATA (tlsupgrade's SendDATA, which
// dot-stuffs a run of lines at a time). It returns the final reply's text,
// or the delivery error.
func (s *Session) send(body io.Reader, size int64) (string, error) {
	err := tlsupgrade.ErrNoChunking
	var reply *smtp.SMTPError
	if size >= bdatMin {
		reply, err = s.conn.SendBDAT(body)
	}
	if errors.Is(err, tlsupgrade.ErrNoChunking) {
		reply, err = s.conn.SendDATA(body)
	}
	switch {
	case err == nil:
		return enhancedText(reply), nil
	case errors.As(err, new(*smtp.SMTPError)):
		// A refused DATA, chunk or message ends the transaction (RFC
		// 3030 2); RSET makes sure of it.
		s.reset()
		return "", s.replyError(err)
	}
	s.broken = true
	return "", queue.TempFail("sending message data", err)
}

// enhancedText writes a reply's text the way go-smtp's DataResponse has
// it: "2.0.0 OK queued as X".
func enhancedText(r *smtp.SMTPError) string {
	if r.EnhancedCode == (smtp.EnhancedCode{}) || r.EnhancedCode == smtp.NoEnhancedCode {
		return r.Message
	}
	return fmt.Sprintf("%d.%d.%d %s", r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], r.Message)
}

// requireTLSError turns a REQUIRETLS refusal into a permanent delivery
// error with the RFC 8689 reply.
func requireTLSError(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return &queue.DeliveryError{Code: se.Code, Enhanced: fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2]), Message: se.Message}
	}
	return &queue.DeliveryError{Code: 550, Enhanced: "5.7.10", Message: "REQUIRETLS: " + err.Error()}
}

// reset ends a failed transaction; a connection that cannot even do that
// is not used again.
func (s *Session) reset() {
	if s.broken {
		return
	}
	if err := s.conn.Client.Reset(); err != nil {
		s.broken = true
	}
}

// replyError turns what go-smtp returned into a delivery error: SMTP
// replies keep their class (4xx temporary, 5xx permanent); anything else is
// a broken connection and temporary.
func (s *Session) replyError(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		if se.Code == 421 {
			s.broken = true // the server is closing the connection
		}
		enh := fmt.Sprintf("%d.0.0", se.Code/100)
		if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != smtp.EnhancedCodeNotSet {
			enh = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return &queue.DeliveryError{Temporary: se.Code/100 != 5, Code: se.Code, Enhanced: enh, Message: se.Message}
	}
	s.broken = true
	return &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.2", Message: "connection to " + s.host + " lost", Err: err}
}

// needsUTF8 reports whether the envelope has non-ASCII addresses. (A
// message flagged SMTPUTF8 with ASCII addresses may go to a server without
// SMTPUTF8.)
func needsUTF8(m *queue.Message, rcpts []*queue.Recipient) bool {
	if !isASCII(m.From) {
		return true
	}
	for _, r := range rcpts {
		if !isASCII(r.Addr) {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Result is the TLS outcome of the session's connection.
func (s *Session) Result() tlsupgrade.Result { return s.conn.Result }

// Interface guards
var _ queue.Session = (*Session)(nil)
