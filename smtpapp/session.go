package smtpapp

import (
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// backend creates a session for every EHLO/HELO of a connection. go-smtp
// starts a new session after STARTTLS, so nothing that must survive the TLS
// upgrade lives in a session.
type backend struct{ srv *Server }

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := &session{srv: b.srv, conn: c}
	if st, ok := c.TLSConnectionState(); ok {
		s.tls = &st
	}
	s.logger = b.srv.logger.With(zap.String("remote_ip", remoteIP(c.Conn().RemoteAddr())))
	return s, nil
}

// session is one SMTP session between EHLO (or STARTTLS) and QUIT.
type session struct {
	srv    *Server
	conn   *smtp.Conn
	tls    *tls.ConnectionState
	logger *zap.Logger

	// the current transaction
	from       string
	hasFrom    bool
	requireTLS bool
	smtputf8   bool
	body       string
	ret        string
	envID      string
	rcpts      []*queue.Recipient
}

// SMTP replies used by sessions. Replies for local failures are 4xx: a
// client must retry, never give up, when the fault is ours.
var (
	errShuttingDown = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
	errTLSRequired  = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
	errRelayDenied  = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied"}
	errBadAddress   = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad address syntax"}
	errLocalFailure = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing, try again later"}
	errBareNewline  = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)"}
	errLineTooLong  = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
	errIncomplete   = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Message data incomplete"}
)

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.srv.draining.Load() {
		return errShuttingDown
	}
	if s.srv.RequireTLS && s.tls == nil {
		return errTLSRequired
	}
	if from != "" && !validAddress(from) {
		s.logger.Info("rejected sender: bad address syntax", zap.String("from", from))
		return errBadAddress
	}
	s.from, s.hasFrom = from, true
	if opts != nil {
		s.requireTLS = opts.RequireTLS
		s.smtputf8 = opts.UTF8
		s.body = string(opts.Body)
		s.ret = string(opts.Return)
		s.envID = opts.EnvelopeID
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !validAddress(to) {
		s.logger.Info("rejected recipient: bad address syntax", zap.String("rcpt", to))
		return errBadAddress
	}
	if s.srv.app.routeFor(s.srv, queue.Domain(to)) == nil {
		s.logger.Info("rejected recipient: relaying denied", zap.String("rcpt", to), zap.String("from", s.from))
		return errRelayDenied
	}
	rcpt := &queue.Recipient{Addr: to}
	if opts != nil {
		for _, n := range opts.Notify {
			rcpt.Notify = append(rcpt.Notify, string(n))
		}
		if opts.OriginalRecipient != "" {
			rcpt.ORCPT = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	s.rcpts = append(s.rcpts, rcpt)
	return nil
}

func (s *session) Data(r io.Reader) error {
	msg := &queue.Message{
		From:       s.from,
		Recipients: s.rcpts,
		Arrived:    time.Now(),
		RequireTLS: s.requireTLS,
		SMTPUTF8:   s.smtputf8,
		Body:       s.body,
		Ret:        s.ret,
		EnvID:      s.envID,
		Client:     s.clientInfo(),
		Server:     s.srv.name,
	}
	id := queue.NewID()
	log := s.logger.With(zap.String("msg_id", id))
	if err := s.receive(id, msg, r); err != nil {
		var serr *smtp.SMTPError
		if !errors.As(err, &serr) {
			log.Error("queueing message failed", zap.Error(err))
			return errLocalFailure
		}
		log.Info("message rejected", zap.Int("code", serr.Code), zap.String("reason", serr.Message))
		return serr
	}
	log.Info("message queued",
		zap.String("from", msg.From),
		zap.Int("rcpts", len(msg.Recipients)),
		zap.Int64("size", msg.Size),
		zap.String("tls_version", msg.Client.TLSVersion))
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK queued as " + id}
}

// receive writes the Received header and the message data into the queue
// and commits it: when it returns nil the message is on disk and fsynced.
// On any failure nothing is left behind. Errors that are *smtp.SMTPError are
// replies for the client; others are local failures.
func (s *session) receive(id string, msg *queue.Message, r io.Reader) error {
	q := s.srv.app.queue
	w, err := q.Create(id)
	if err != nil {
		return err
	}
	msg.ID = id
	if _, err := io.WriteString(w, receivedHeader(s.srv.Hostname, msg, len(msg.Recipients) == 1)); err != nil {
		w.Abort()
		return err
	}
	check := &crlfChecker{w: w}
	if _, err := io.Copy(check, r); err != nil {
		w.Abort()
		return classifyDataError(err)
	}
	if err := check.finish(); err != nil {
		w.Abort()
		return err
	}
	return q.Commit(w, msg)
}

// classifyDataError maps an error met while copying DATA into the reply:
// protocol errors from the client side become their SMTP replies, write
// errors stay local failures.
func classifyDataError(err error) error {
	var serr *smtp.SMTPError
	var werr writeError
	switch {
	case errors.As(err, &werr):
		return werr.err // our disk, not the client
	case errors.As(err, &serr):
		return serr // e.g. 552 message too big
	case errors.Is(err, smtp.ErrTooLongLine):
		return errLineTooLong
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, smtp.ErrDataReset):
		return errIncomplete
	}
	return err
}

func (s *session) clientInfo() queue.ClientInfo {
	ci := queue.ClientInfo{
		Addr: remoteIP(s.conn.Conn().RemoteAddr()),
		Helo: s.conn.Hostname(),
	}
	if s.tls != nil {
		ci.TLSVersion = tlsupgrade.VersionName(s.tls.Version)
		ci.TLSCipher = tls.CipherSuiteName(s.tls.CipherSuite)
	}
	return ci
}

func (s *session) Reset() {
	s.from, s.hasFrom, s.requireTLS, s.smtputf8, s.rcpts = "", false, false, false, nil
	s.body, s.ret, s.envID = "", "", ""
}

func (s *session) Logout() error { return nil }

// validAddress does the checks every address gets: a length limit (RFC 5321
// 4.5.3.1.3), no control characters or spaces outside quotes, and a local
// part and a domain.
func validAddress(addr string) bool {
	if len(addr) == 0 || len(addr) > 256 {
		return false
	}
	for _, r := range addr {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return false
	}
	domain := addr[at+1:]
	if strings.HasPrefix(domain, "[") {
		return strings.HasSuffix(domain, "]")
	}
	return !strings.ContainsAny(domain, " \t()<>,;:\\\"[]@")
}

// Interface guards
var _ smtp.Session = (*session)(nil)
