package smtpapp

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/dataread"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// backend creates a session for every EHLO/HELO of a connection. go-smtp
// starts a new session after STARTTLS, so nothing that must survive the TLS
// upgrade lives in a session.
type backend struct{ srv *Server }

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := &session{srv: b.srv, conn: c, ip: remoteIP(c.Conn().RemoteAddr())}
	if st, ok := c.TLSConnectionState(); ok {
		s.tls = &st
	}
	if tc := trackedOf(c.Conn()); tc != nil {
		s.cs = &tc.state
	} else {
		s.cs = new(connState)
	}
	if s.tls != nil {
		hookReplies(c, s.cs)
	}
	// Lazily: most sessions never log, and an encoded child logger costs
	// each connection about 1 KiB for as long as it is open.
	s.logger = b.srv.logger.WithLazy(zap.String("remote_ip", s.ip))
	s.cs.note(func(cs *connState) {
		cs.helo = c.Hostname()
		if s.tls != nil {
			cs.tlsVersion = tlsupgrade.VersionName(s.tls.Version)
			cs.tlsCipher = tlsupgrade.CipherName(s.tls.CipherSuite)
		}
	})
	return s, nil
}

// session is one SMTP session between EHLO (or STARTTLS) and QUIT.
type session struct {
	srv      *Server
	conn     *smtp.Conn
	ip       string
	cs       *connState // shared by the sessions of the connection
	tls      *tls.ConnectionState
	identity *Identity // after AUTH
	logger   *zap.Logger

	// the current transaction
	from       string
	hasFrom    bool
	requireTLS bool
	smtputf8   bool
	body       string
	ret        string
	envID      string
	rcpts      []*queue.Recipient
	rcptRoutes []*Route     // the route of each recipient (nil: none)
	tx         *Transaction // the checks' shared state
}

// SMTP replies used by sessions. Replies for local failures are 4xx: a
// client must retry, never give up, when the fault is ours.
var (
	errShuttingDown  = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
	errTooManyErrors = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many errors, closing connection"}
	errTooManyMsgs   = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many messages on this connection, reconnect"}
	errMessageRate   = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Too many messages from your address, try again later"}
	errRcptRate      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Too many recipients from your address, try again later"}
	errRcptsPerConn  = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients on this connection"}
	errTLSRequired   = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
	errAuthRequired  = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errRelayDenied   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied"}
	errRouting       = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied: source routing and %, ! in addresses are not allowed"}
	errSenderNotOwn  = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address not owned by the authenticated user"}
	errBadAddress    = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad address syntax"}
	errBadSender     = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Bad sender address syntax"}
	errLocalFailure  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing, try again later"}
	errBareNewline   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)"}
	errLineTooLong   = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
	errIncomplete    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Message data incomplete"}
	errNestedMail    = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Sender already given; send RSET to start over"}
	errAuthInMail    = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "AUTH not allowed during a mail transaction"}
)

// rejectReasons label rejections in metrics.
var rejectReasons = map[*smtp.SMTPError]string{
	errShuttingDown:      "shutting_down",
	errTooManyErrors:     "too_many_errors",
	errTooManyMsgs:       "max_messages_per_connection",
	errMessageRate:       "message_rate_per_ip",
	errRcptRate:          "recipient_rate_per_ip",
	errRcptsPerConn:      "max_recipients_per_connection",
	errTLSRequired:       "tls_required",
	errAuthRequired:      "auth_required",
	errRelayDenied:       "relay_denied",
	errRouting:           "source_routing",
	errSenderNotOwn:      "sender_not_owned",
	errBadAddress:        "bad_address",
	errBadSender:         "bad_address",
	errLocalFailure:      "local_failure",
	errBareNewline:       "bare_newline",
	errLineTooLong:       "line_too_long",
	errIncomplete:        "incomplete",
	errNeedUTF8:          "bad_address",
	errNestedMail:        "bad_sequence",
	errAuthInMail:        "bad_sequence",
	smtp.ErrDataTooLarge: "too_big",
}

// refuse counts a refusal in the metrics and returns it.
func (s *session) refuse(err *smtp.SMTPError) error {
	reason, ok := rejectReasons[err]
	if !ok {
		reason = "other"
	}
	s.srv.app.metrics.commandsRejected.WithLabelValues(s.srv.name, reason).Inc()
	return err
}

// reject logs a rejected command at warning level (with fields saying
// what was refused) and counts it against the connection; past
// max_bad_commands the client gets 421 and the connection is closed.
func (s *session) reject(err *smtp.SMTPError, fields ...zap.Field) error {
	s.logger.Warn("command rejected", append(fields,
		zap.Int("code", err.Code), zap.String("enhanced_code", enhanced(err.EnhancedCode)), zap.String("reason", err.Message))...)
	s.refuse(err)
	if s.cs.badCommand() > s.srv.MaxBadCommands {
		s.logger.Warn("too many rejected commands; closing connection", zap.Int("max_bad_commands", s.srv.MaxBadCommands))
		return s.closeWith(errTooManyErrors)
	}
	return err
}

// closeWith answers with a 421 reply and closes the connection after it.
func (s *session) closeWith(err *smtp.SMTPError) error {
	s.cs.closeAfterReply.Store(true)
	return s.refuse(err)
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.srv.draining.Load() {
		return s.refuse(errShuttingDown)
	}
	if s.srv.app.queue.StorageLow() {
		s.logger.Warn("message refused: spool storage low", zap.Int("code", errStorageLow.Code), zap.String("enhanced_code", "4.3.1"))
		return s.refuse(errStorageLow)
	}
	if s.hasFrom {
		return s.reject(errNestedMail, zap.String("from", from))
	}
	if s.srv.RequireTLS && s.tls == nil {
		return s.reject(errTLSRequired)
	}
	if s.srv.RequireAuth && s.identity == nil && !s.srv.relayNetworks.contains(s.ip) {
		return s.reject(errAuthRequired)
	}
	if int(s.cs.messages.Add(1)) > s.srv.MaxMessagesPerConnection {
		s.logger.Warn("message limit per connection reached", zap.Int("max_messages_per_connection", s.srv.MaxMessagesPerConnection))
		return s.closeWith(errTooManyMsgs)
	}
	if from != "" {
		e := checkAddress(from, false)
		if e == nil {
			e = checkEncoding(from, opts != nil && opts.UTF8)
		}
		if e != nil {
			if e == errBadAddress {
				e = errBadSender
			}
			return s.reject(e, zap.String("from", from))
		}
	}
	if s.identity != nil && !s.identity.mayUse(from) {
		return s.reject(errSenderNotOwn, zap.String("from", from), zap.String("username", s.identity.Username))
	}
	if !s.srv.app.limits.allow("msg-rate:"+s.srv.name+":"+s.srv.limitKey(s.ip), s.srv.MessageRatePerIP, time.Minute) {
		s.logger.Warn("message rate limit reached", zap.Int("message_rate_per_ip", s.srv.MessageRatePerIP))
		return s.refuse(errMessageRate)
	}
	s.from, s.hasFrom = from, true
	s.tx = new(Transaction)
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
	e := checkAddress(to, true)
	if e == nil {
		e = checkEncoding(to, s.smtputf8)
	}
	if e != nil {
		return s.reject(e, zap.String("rcpt", to))
	}
	in := s.matchInput(to)
	if !s.mayRelayTo(in) {
		return s.reject(errRelayDenied, zap.String("rcpt", to), zap.String("from", s.from))
	}
	if int(s.cs.recipients.Add(1)) > s.srv.MaxRecipientsPerConnection {
		return s.refuse(errRcptsPerConn)
	}
	if !s.srv.app.limits.allow("rcpt-rate:"+s.srv.name+":"+s.srv.limitKey(s.ip), s.srv.RecipientRatePerIP, time.Minute) {
		s.logger.Warn("recipient rate limit reached", zap.Int("recipient_rate_per_ip", s.srv.RecipientRatePerIP))
		return s.refuse(errRcptRate)
	}
	route := s.srv.app.routeFor(s.srv, in, false)
	if err := s.checkRecipient(route, &in); err != nil {
		return err
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
	s.rcptRoutes = append(s.rcptRoutes, route)
	return nil
}

// matchInput is what routes and checks see of a recipient of the current
// transaction.
func (s *session) matchInput(rcpt string) MatchInput {
	in := MatchInput{Sender: s.from, Recipient: rcpt, RecipientDomain: queue.Domain(rcpt),
		ClientIP: net.ParseIP(s.ip), Server: s.srv.name, Helo: s.conn.Hostname(), Tx: s.tx}
	if s.identity != nil {
		in.AuthUser = s.identity.Username
	}
	in.TLSVersion, in.TLSCipher = s.tlsNames()
	in.Trusted = s.identity != nil || s.srv.relayNetworks.contains(s.ip)
	return in
}

// mayRelayTo is relay control: the domains of the routes are open to
// anyone; every other domain only to authenticated users and clients in
// relay_networks.
func (s *session) mayRelayTo(in MatchInput) bool {
	if s.srv.app.routeFor(s.srv, in, true) != nil {
		return true
	}
	return s.identity != nil || s.srv.relayNetworks.contains(s.ip)
}

func (s *session) remoteIP() string { return s.ip }

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
	if err := s.receive(id, msg, r, func() { s.accepted(log, msg) }); err != nil {
		var serr *smtp.SMTPError
		var cerr clientError
		switch {
		case errors.As(err, &cerr):
			// The client went away or stopped sending: not our failure.
			log.Info("message not received: the client did not complete it", zap.Error(cerr.err))
			serr = errIncomplete
		case errors.Is(err, queue.ErrInsufficientStorage):
			log.Warn("message refused: spool storage low", zap.Error(err))
			serr = errStorageLow
		case !errors.As(err, &serr):
			log.Error("queueing message failed", zap.Error(err))
			serr = errLocalFailure
		case errors.As(err, new(checkRefusal)):
			// logged by the check stage, with the check and its reason
		default:
			log.Warn("message rejected", zap.Int("code", serr.Code),
				zap.String("enhanced_code", enhanced(serr.EnhancedCode)), zap.String("reason", serr.Message))
		}
		reason, ok := rejectReasons[serr]
		if errors.As(err, new(checkRefusal)) {
			reason, ok = "check", true
		}
		if !ok {
			reason = "other"
		}
		s.srv.app.metrics.messagesRejected.WithLabelValues(s.srv.name, reason).Inc()
		return serr
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK queued as " + id}
}

// accepted counts and logs a message that is committed (on disk), before
// the queue may start delivering it, so that its "message queued" line
// comes before its delivery lines.
func (s *session) accepted(log *zap.Logger, msg *queue.Message) {
	s.cs.note(func(cs *connState) { cs.accepted++; cs.bytes += msg.Size })
	s.srv.app.metrics.messagesAccepted.WithLabelValues(s.srv.name, strconv.FormatBool(s.tls != nil)).Inc()
	s.srv.app.metrics.bytesReceived.WithLabelValues(s.srv.name).Add(float64(msg.Size))
	s.srv.app.notify(func(o Observer) { o.MessageReceived(s.srv.name, msg.From, s.tls != nil, len(msg.Recipients)) })
	rcpts := make([]string, len(msg.Recipients))
	for i, r := range msg.Recipients {
		rcpts[i] = r.Addr
	}
	fields := []zap.Field{
		zap.String("from", msg.From),
		zap.Int("rcpts", len(msg.Recipients)),
		zap.Strings("to", rcpts),
		zap.String("message_id", msg.MessageID),
		zap.Int64("size", msg.Size),
		zap.String("tls_version", msg.Client.TLSVersion),
	}
	if len(msg.Checks) > 0 {
		fields = append(fields, zap.Object("checks", checkResultsField(msg.Checks)))
	}
	if msg.Quarantine != nil {
		fields = append(fields, zap.String("quarantined_by", msg.Quarantine.Check))
		log.Warn("message quarantined", append(fields, zap.String("reason", msg.Quarantine.Reason))...)
	} else {
		log.Info("message queued", fields...)
	}
}

// receive writes the Received header and the message data into the queue
// and commits it: when it returns nil the message is on disk and fsynced.
// On any failure nothing is left behind. Errors that are *smtp.SMTPError are
// replies for the client; others are local failures.
func (s *session) receive(id string, msg *queue.Message, r io.Reader, committed func()) error {
	q := s.srv.app.queue
	w, err := q.Create(id)
	if err != nil {
		return err
	}
	msg.ID = id
	received := receivedHeader(s.srv.Hostname, msg, len(msg.Recipients) == 1)
	if _, err := io.WriteString(w, received); err != nil {
		w.Abort()
		return err
	}
	scan := &tlsRequiredScanner{}
	src, done := s.strictData(r)
	defer done()
	if p := s.srv.app.pacer; p != nil {
		src = p.Reader(s.srv.app.ctx, src)
	}
	judges := s.startMessageChecks(msg)
	var head headerCapture // the header section as stored, for a body replacement
	filter := newAuthResultsFilter(io.MultiWriter(w, &head), s.srv.Hostname)
	bp := copyBuffers.Get().(*[]byte)
	_, err = io.CopyBuffer(destWriter{io.MultiWriter(filter, scan)}, io.TeeReader(src, judges), *bp)
	copyBuffers.Put(bp)
	if err != nil {
		judges.abort()
		w.Abort()
		return classifyDataError(err)
	}
	if err := filter.Flush(); err != nil {
		judges.abort()
		w.Abort()
		return err
	}
	if filter.Removed() > 0 {
		s.logger.Warn("removed Authentication-Results header fields that claimed our authserv-id",
			zap.String("msg_id", id), zap.Int("fields", filter.Removed()), zap.String("authserv_id", s.srv.Hostname))
	}
	body, err := s.finishMessageChecks(judges, msg)
	if err != nil {
		w.Abort()
		return err
	}
	if body != nil {
		if w, err = s.replaceBody(w, id, received, &head, body); err != nil {
			return err
		}
	}
	// RFC 8689 section 5: with REQUIRETLS the header field is ignored.
	msg.TLSOptional = scan.optout && !msg.RequireTLS
	msg.MessageID = scan.messageID
	return q.CommitThen(w, msg, committed)
}

// replaceBody discards what w holds and writes the message again, with
// its trace header and header section as received and the body a check
// gave.
func (s *session) replaceBody(w queue.BodyWriter, id, received string, head *headerCapture, body []byte) (queue.BodyWriter, error) {
	w.Abort()
	section, ok := head.section()
	if !ok || s.srv.MaxMessageSize > 0 && int64(len(section)+len(body)) > s.srv.MaxMessageSize {
		s.logger.Error("cannot replace the message body", zap.String("msg_id", id),
			zap.Bool("header_too_long", !ok), zap.Int("body_size", len(body)))
		return nil, errLocalFailure
	}
	nw, err := s.srv.app.queue.Create(id)
	if err != nil {
		return nil, err
	}
	for _, part := range [][]byte{[]byte(received), section, crlfLines(body)} {
		if _, err := nw.Write(part); err != nil {
			nw.Abort()
			return nil, err
		}
	}
	return nw, nil
}

// headerCapture keeps the start of a message up to and including the
// empty line that ends its header section (at most maxHeaderCapture
// bytes), and ignores the rest.
type headerCapture struct {
	buf      []byte
	done     bool // the header section is complete
	overflow bool // it was longer than maxHeaderCapture
}

const maxHeaderCapture = 1 << 20

func (h *headerCapture) Write(p []byte) (int, error) {
	if h.done || h.overflow {
		return len(p), nil
	}
	start := max(0, len(h.buf)-3)
	h.buf = append(h.buf, p...)
	if i := bytes.Index(h.buf[start:], []byte("\r\n\r\n")); i >= 0 {
		h.buf, h.done = h.buf[:start+i+4], true
	} else if len(h.buf) > maxHeaderCapture {
		h.buf, h.overflow = nil, true
	}
	return len(p), nil
}

// section returns the header section with its ending empty line; a
// message without a body gets the empty line added.
func (h *headerCapture) section() ([]byte, bool) {
	switch {
	case h.overflow:
		return nil, false
	case h.done:
		return h.buf, true
	case len(h.buf) == 0:
		return []byte("\r\n"), true
	case bytes.HasSuffix(h.buf, []byte("\r\n")):
		return append(h.buf, "\r\n"...), true
	}
	return append(h.buf, "\r\n\r\n"...), true
}

// crlfLines gives every line of b a CRLF ending (a bare LF or CR becomes
// CRLF), as the spool stores messages.
func crlfLines(b []byte) []byte {
	if !bytes.ContainsAny(b, "\r\n") {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/40)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\r' && i+1 < len(b) && b[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case c == '\r' || c == '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
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
	case errors.Is(err, dataread.ErrBareCR), errors.Is(err, dataread.ErrBareLF), errors.Is(err, dataread.ErrNUL):
		return errBareNewline
	case errors.Is(err, dataread.ErrTooLarge):
		return smtp.ErrDataTooLarge
	case errors.Is(err, dataread.ErrLineTooLong):
		return errLineTooLong
	case errors.As(err, &serr):
		return serr // e.g. 552 message too big
	case errors.Is(err, smtp.ErrTooLongLine):
		return errLineTooLong
	}
	// Anything else came from reading the client: it closed the
	// connection, reset it, timed out or sent RSET during BDAT.
	return clientError{err}
}

// clientError is a failure to read a message from the client.
type clientError struct{ err error }

func (e clientError) Error() string { return "reading the message from the client: " + e.err.Error() }
func (e clientError) Unwrap() error { return e.err }

// enhanced formats an enhanced status code as "5.7.1".
func enhanced(c smtp.EnhancedCode) string {
	return strconv.Itoa(c[0]) + "." + strconv.Itoa(c[1]) + "." + strconv.Itoa(c[2])
}

func (s *session) clientInfo() queue.ClientInfo {
	ci := queue.ClientInfo{
		Addr: s.ip,
		Helo: s.conn.Hostname(),
	}
	if s.identity != nil {
		ci.AuthUser = s.identity.Username
	}
	ci.TLSVersion, ci.TLSCipher = s.tlsNames()
	return ci
}

func (s *session) Reset() {
	s.tx.end()
	s.from, s.hasFrom, s.requireTLS, s.smtputf8, s.rcpts, s.rcptRoutes, s.tx = "", false, false, false, nil, nil, nil
	s.body, s.ret, s.envID = "", "", ""
}

// Logout ends the session. On STARTTLS, go-smtp calls it on the
// connection's goroutine with the connection already in TLS: the new text
// writer gets the reply rewriting.
func (s *session) Logout() error {
	s.tx.end()
	if s.tls == nil {
		if _, ok := s.conn.TLSConnectionState(); ok {
			hookReplies(s.conn, s.cs)
		}
	}
	return nil
}

// checkAddress applies the syntax rules every address must pass (RFC 5321
// 4.1.2, 4.5.3.1): at most 256 octets, a local part of at most 64 and a
// domain of at most 255, no control characters, exactly one '@' (quoted
// local parts that hide another '@' and source routes are refused), a
// domain that is a host name or a valid address literal. For recipients,
// '%' and '!' in the local part (the old relay syntaxes) are refused too.
// isDotAtom reports whether s is a dot-atom: atext (letters, digits and
// !#$%&'*+-/=?^_`{|}~, and any non-ASCII UTF-8, which checkEncoding
// judges) in dot-separated, non-empty parts.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// errNeedUTF8 refuses a non-ASCII address without SMTPUTF8 (RFC 6531
// section 3.5).
var errNeedUTF8 = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "Non-ASCII address without SMTPUTF8"}

// checkEncoding refuses an address that is not valid UTF-8, and a
// non-ASCII one unless the transaction has SMTPUTF8: the spool keeps
// addresses as UTF-8 text, and a next hop without SMTPUTF8 may not get
// them.
func checkEncoding(addr string, smtputf8 bool) *smtp.SMTPError {
	if !utf8.ValidString(addr) {
		return errBadAddress
	}
	if !smtputf8 {
		for i := 0; i < len(addr); i++ {
			if addr[i] >= 0x80 {
				return errNeedUTF8
			}
		}
	}
	return nil
}

func checkAddress(addr string, recipient bool) *smtp.SMTPError {
	if len(addr) > 256 {
		return errBadAddress
	}
	for _, r := range addr {
		if r < 0x20 || r == 0x7f {
			return errBadAddress
		}
	}
	if strings.HasPrefix(addr, "@") || strings.Count(addr, "@") != 1 {
		if strings.Count(addr, "@") > 1 || strings.Contains(addr, ":") {
			return errRouting
		}
		return errBadAddress
	}
	at := strings.IndexByte(addr, '@')
	local, domain := addr[:at], addr[at+1:]
	if local == "" || len(local) > 64 || domain == "" || len(domain) > 255 {
		return errBadAddress
	}
	if recipient && strings.ContainsAny(local, "%!") {
		return errRouting
	}
	// go-smtp takes quoted local parts and hands them over unquoted: a
	// local part with a space, "<", ">" or another special would then go
	// to the next hop unquoted (`RCPT TO:<c>@example.test>` from
	// `"c>"@example.test`). Only dot-atoms (RFC 5321 section 4.1.2) pass.
	if !isDotAtom(local) {
		return errBadAddress
	}
	if lit, ok := strings.CutPrefix(domain, "["); ok {
		lit, ok = strings.CutSuffix(lit, "]")
		if !ok || net.ParseIP(strings.TrimPrefix(lit, "IPv6:")) == nil {
			return errBadAddress
		}
		return nil
	}
	d := strings.TrimSuffix(domain, ".")
	if d == "" || strings.HasPrefix(d, ".") || strings.Contains(d, "..") {
		return errBadAddress
	}
	for _, r := range d {
		if r < 0x80 && !(r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return errBadAddress
		}
	}
	return nil
}

// Interface guards
var _ smtp.Session = (*session)(nil)

// tlsNames returns the session's TLS version ("TLSv1.3") and cipher
// suite, or empty strings for plaintext.
// copyBuffers are the buffers that DATA is copied through into the spool:
// io.Copy would allocate one per message.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (s *session) tlsNames() (version, cipher string) {
	if s.tls == nil {
		return "", ""
	}
	return tlsupgrade.VersionName(s.tls.Version), tlsupgrade.CipherName(s.tls.CipherSuite)
}
