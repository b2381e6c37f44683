package tlsupgrade

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Default timeouts, after RFC 5321 section 4.5.3.2 and Postfix.
const (
	// DefaultConnectTimeout bounds the TCP connect (Postfix
	// smtp_connect_timeout).
	DefaultConnectTimeout = 30 * time.Second
	// DefaultCommandTimeout bounds each reply, the greeting included, and
	// each write (RFC 5321: 5 minutes for the greeting and most commands).
	DefaultCommandTimeout = 5 * time.Minute
	// DefaultHandshakeTimeout bounds the TLS handshake.
	DefaultHandshakeTimeout = 30 * time.Second
)

// maxPreludeBytes bounds what Dial reads itself on one connection (greeting,
// EHLO and STARTTLS replies), so that a hostile server cannot make it buffer
// an endless line.
const maxPreludeBytes = 64 << 10

// Options configures [Dial].
type Options struct {
	// LocalName is our name in EHLO/HELO. Required.
	LocalName string
	// ServerName is the host we meant to reach (the MX or relay host name):
	// it is sent as SNI and the certificate is checked against it. A trailing
	// dot is ignored. Default: the host part of the address when it is a name;
	// without a name the certificate is recorded as not verified.
	ServerName string
	// Policy is the TLS policy. Default: opportunistic.
	Policy Policy
	// RootCAs are the roots the certificate is checked against to fill
	// [Result.Verified]. Default: the system roots.
	RootCAs *x509.CertPool
	// DialContext opens the TCP connection. Default: a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// ConnectTimeout bounds the TCP connect. Default: DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each reply and each write, here and in the
	// Client. Default: DefaultCommandTimeout.
	CommandTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake. Default:
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// ImplicitTLS starts TLS right after the TCP connect, before the
	// greeting, as on port 465 (RFC 8314): no STARTTLS, and no plaintext
	// fallback, so the Policy must require TLS (required or verify).
	ImplicitTLS bool
	// SessionCache keeps TLS sessions, so that a later Dial to the same
	// address with the same server name, implicit TLS, policy and roots
	// resumes one and skips the certificate and its signature. The
	// certificate of a resumed session is checked against the policy and
	// recorded in the Result all the same. Default: a cache of
	// SessionCacheSize sessions shared by the process.
	SessionCache tls.ClientSessionCache
	// NoSessionResumption makes every handshake a full one, neither
	// offering nor keeping sessions: for a checking tool that must see the
	// certificate the server sends now. Default: false.
	NoSessionResumption bool
}

var defaultDialer net.Dialer

// withDefaults checks the options and fills in the defaults.
func (o Options) withDefaults(addr string) (Options, error) {
	if o.LocalName == "" {
		return o, errors.New("local name is required")
	}
	if strings.ContainsFunc(o.LocalName, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return o, fmt.Errorf("local name %q contains spaces or control characters", o.LocalName)
	}
	if err := o.Policy.Validate(); err != nil {
		return o, err
	}
	if o.ImplicitTLS && !o.Policy.requiresTLS() {
		return o, fmt.Errorf("implicit TLS needs a TLS level that requires TLS (required or verify), not %s", o.Policy.name())
	}
	if o.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil && net.ParseIP(host) == nil {
			o.ServerName = host
		}
	}
	o.ServerName = normalizeServerName(o.ServerName)
	if o.DialContext == nil {
		o.DialContext = defaultDialer.DialContext
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = DefaultCommandTimeout
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.SessionCache == nil {
		o.SessionCache = sharedSessions
	}
	return o, nil
}

// Dial connects to addr ("host:port"), greets the server with EHLO
// opts.LocalName, upgrades the session with STARTTLS as opts.Policy asks (see
// the package documentation for the fallbacks) and returns a Conn whose Client
// has already said EHLO on the final session, over TLS when there is TLS.
//
// ctx bounds the whole session, not only the dial: when it ends the
// connection is closed, also after Dial returned, so pass a context that
// lives as long as the delivery attempt. Close the Conn when done.
//
// Errors are *DialError values.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	o, err := opts.withDefaults(addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Stage: StageOptions, Err: err}
	}
	d := &dialer{addr: addr, opts: o, policy: o.Policy}
	d.res.Level = o.Policy.level()
	d.res.Policy = o.Policy.name()
	if sts := d.policy.sts(); sts != nil && !sts.Matches(o.ServerName) {
		pe := &PolicyError{ResultType: ResultValidationFailure, Err: ErrMXNotInPolicy}
		d.res.fail(pe)
		if d.policy.level() == LevelMTASTS {
			return nil, d.fail(ctx, StagePolicy, pe)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, d.fail(ctx, StageDial, err)
	}

	p, err := d.open(ctx)
	if err != nil {
		return nil, err
	}
	if p.implicit != nil {
		d.res.Implicit = true
		return d.handover(ctx, p, p.implicit)
	}
	d.res.Offered = p.offered
	switch {
	case !d.policy.wantsTLS():
		d.res.Fallback = fallbackPolicy
		d.shortfall(ctx, ResultValidationFailure, errors.New(fallbackPolicy))
		return d.handover(ctx, p, nil)
	case !p.offered:
		d.shortfall(ctx, ResultSTARTTLSNotSupported, ErrSTARTTLSNotOffered)
		if d.policy.requiresTLS() {
			return nil, d.abort(ctx, p, StageSTARTTLS, ErrSTARTTLSNotOffered)
		}
		d.res.Fallback = fallbackNotOffered
		return d.handover(ctx, p, nil)
	}

	refused, err := p.startTLS()
	switch {
	case refused != nil:
		d.shortfall(ctx, ResultSTARTTLSNotSupported, refused)
		if d.policy.requiresTLS() {
			return nil, d.abort(ctx, p, StageSTARTTLS, refused)
		}
		// The server stays in plaintext after a 4xx/5xx (RFC 3207).
		d.res.Fallback = "starttls refused: " + formatReply(refused)
		return d.handover(ctx, p, nil)
	case err != nil:
		p.close()
		d.shortfall(ctx, ResultValidationFailure, fmt.Errorf("starttls failed: %w", err))
		if d.policy.requiresTLS() || ctx.Err() != nil {
			return nil, d.fail(ctx, StageSTARTTLS, err)
		}
		return d.redial(ctx, "starttls failed: "+err.Error())
	}

	tc, err := d.handshake(p)
	if err != nil {
		p.close()
		// A certificate rejected by the policy is recorded already.
		d.shortfall(ctx, ResultValidationFailure, fmt.Errorf("handshake failed: %w", err))
		if d.policy.requiresTLS() || ctx.Err() != nil {
			return nil, d.fail(ctx, StageHandshake, err)
		}
		return d.redial(ctx, "handshake failed: "+err.Error())
	}
	return d.handover(ctx, p, tc)
}

// shortfall records a way in which the session falls short of the policy,
// when the policy asks for more than opportunistic TLS (see Result.Failure).
// An ended context is no TLS failure.
func (d *dialer) shortfall(ctx context.Context, resultType string, err error) {
	if d.policy.reportsFailures() && ctx.Err() == nil {
		d.res.fail(&PolicyError{ResultType: resultType, Err: err})
	}
}

// dialer holds the state of one Dial call.
type dialer struct {
	addr   string
	opts   Options
	policy Policy
	res    Result
	// retry is the reason for the plaintext reconnection, once there is one.
	retry string
}

// fail builds the error for a failure at stage. When ctx has ended, the
// context error replaces the cause (which is then mostly "use of closed
// network connection").
func (d *dialer) fail(ctx context.Context, stage string, err error) *DialError {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return &DialError{
		Addr:      d.addr,
		Stage:     stage,
		Fallback:  d.retry,
		Temporary: stage != StageOptions,
		Err:       err,
		Result:    d.res,
	}
}

// abort ends a session that is still in sync with a polite QUIT.
func (d *dialer) abort(ctx context.Context, p *prelude, stage string, err error) *DialError {
	p.quit()
	p.close()
	return d.fail(ctx, stage, err)
}

// open connects, reads the greeting and says EHLO (HELO for servers that do
// not know EHLO).
func (d *dialer) open(ctx context.Context) (*prelude, error) {
	dctx, cancel := context.WithTimeout(ctx, d.opts.ConnectTimeout)
	conn, err := d.opts.DialContext(dctx, "tcp", d.addr)
	cancel()
	if err != nil {
		return nil, d.fail(ctx, StageDial, err)
	}
	p := &prelude{conn: conn, raw: conn, timeout: d.opts.CommandTimeout}
	p.stop = context.AfterFunc(ctx, func() { conn.Close() })
	if d.opts.ImplicitTLS {
		tc, err := d.handshake(p)
		if err != nil {
			p.close()
			d.shortfall(ctx, ResultValidationFailure, fmt.Errorf("handshake failed: %w", err))
			return nil, d.fail(ctx, StageHandshake, err)
		}
		p.conn, p.implicit = tc, tc
	}
	p.br = bufio.NewReader(&preludeReader{r: p.conn, n: maxPreludeBytes})
	p.r = textproto.NewReader(p.br)

	p.conn.SetDeadline(time.Now().Add(d.opts.CommandTimeout))
	_, p.greeting, err = p.r.ReadResponse(220)
	if err != nil {
		if _, ok := errors.AsType[*textproto.Error](err); ok {
			return nil, d.abort(ctx, p, StageGreeting, replyError(err))
		}
		p.close()
		return nil, d.fail(ctx, StageGreeting, err)
	}

	code, msg, err := p.cmd("EHLO " + d.opts.LocalName)
	extended := true
	if err == nil && (code == 500 || code == 502) {
		extended = false
		code, msg, err = p.cmd("HELO " + d.opts.LocalName)
	}
	if err == nil && code != 250 {
		return nil, d.abort(ctx, p, StageEHLO, parseReply(code, msg))
	}
	if err != nil {
		p.close()
		return nil, d.fail(ctx, StageEHLO, err)
	}
	p.offered = extended && hasExtension(msg, "STARTTLS")
	return p, nil
}

// redial gives up on TLS for this Dial call and proceeds in plaintext on a
// new connection.
func (d *dialer) redial(ctx context.Context, reason string) (*Conn, error) {
	d.retry = reason
	r := d.res
	d.res = Result{Level: r.Level, Policy: r.Policy, Offered: r.Offered, Fallback: reason,
		Failure: r.Failure, FailureReason: r.FailureReason}
	p, err := d.open(ctx)
	if err != nil {
		return nil, err
	}
	return d.handover(ctx, p, nil)
}

// handshake runs the TLS client handshake on p's connection. The certificate
// is checked and recorded in d.res during the handshake; the policy decides
// whether a failed check (PKIX or DANE) aborts it. The SNI is the server name
// (RFC 7672 section 8.1 wants the TLSA base domain, which is the MX host name
// unless the caller followed a CNAME).
func (d *dialer) handshake(p *prelude) (*tls.Conn, error) {
	cfg := &tls.Config{
		ServerName: sniName(d.opts.ServerName),
		MinVersion: tls.VersionTLS12,
		// The certificate is checked in VerifyConnection, where the outcome
		// is recorded and the policy decides. Opportunistic TLS must not
		// fail on a certificate nobody could check (RFC 7435).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			verifyErr := d.res.recordPeer(cs, d.opts.ServerName, d.opts.RootCAs)
			return d.policy.checkPeer(cs, d.opts.ServerName, &d.res, verifyErr)
		},
	}
	if !d.opts.NoSessionResumption {
		cfg.ClientSessionCache = scopedSessions{scope: sessionScope(d.addr, d.opts), cache: d.opts.SessionCache}
	}
	tc := tls.Client(p.conn, cfg)
	p.conn.SetDeadline(time.Now().Add(d.opts.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	d.res.recordTLS(tc.ConnectionState())
	return tc, nil
}

// handover gives the session to a go-smtp Client and has it say EHLO: over
// TLS on tc when tc is not nil, else in plaintext on p's connection.
func (d *dialer) handover(ctx context.Context, p *prelude, tc *tls.Conn) (*Conn, error) {
	// go-smtp's Client starts by reading a greeting: replay the real one,
	// followed in plaintext by whatever the prelude reader had already
	// buffered (after STARTTLS, startTLS made sure there was nothing).
	pending := replayGreeting(p.greeting)
	var conn net.Conn = p.conn
	stage := StageEHLO
	if tc != nil {
		conn, stage = tc, StageTLSEHLO
	} else if n := p.br.Buffered(); n > 0 {
		b, _ := p.br.Peek(n)
		pending = append(pending, b...)
	}
	conn.SetDeadline(time.Time{})

	wire := &handoverConn{Conn: conn, pending: pending, writeTimeout: d.opts.CommandTimeout}
	client := smtp.NewClient(wire)
	client.CommandTimeout = d.opts.CommandTimeout
	if err := client.Hello(d.opts.LocalName); err != nil {
		client.Close()
		p.stop()
		return nil, d.fail(ctx, stage, err)
	}
	return &Conn{Client: client, Result: d.res, netConn: p.raw, tlsConn: tc, stop: p.stop, wire: wire}, nil
}

// prelude is a connection while Dial speaks on it itself.
type prelude struct {
	conn     net.Conn // raw, or implicit after an implicit TLS handshake
	raw      net.Conn // the TCP connection
	implicit *tls.Conn
	br       *bufio.Reader
	r        *textproto.Reader
	stop     func() bool // unregisters the close-on-ctx-done hook
	timeout  time.Duration
	greeting string // text of the 220 greeting
	offered  bool   // STARTTLS advertised
}

// cmd sends one command line and reads the reply, whatever its code.
func (p *prelude) cmd(line string) (int, string, error) {
	p.conn.SetDeadline(time.Now().Add(p.timeout))
	if _, err := io.WriteString(p.conn, line+"\r\n"); err != nil {
		return 0, "", err
	}
	return p.r.ReadResponse(0)
}

// startTLS sends STARTTLS. A 4xx/5xx reply is returned as refused (the
// session is still plaintext and in sync); any other failure as err (the
// session is not usable).
func (p *prelude) startTLS() (refused *smtp.SMTPError, err error) {
	code, msg, err := p.cmd("STARTTLS")
	switch {
	case err != nil:
		return nil, err
	case code/100 == 4 || code/100 == 5:
		return parseReply(code, msg), nil
	case code != 220:
		return nil, fmt.Errorf("unexpected reply %s", formatReply(parseReply(code, msg)))
	}
	// Anything the server sent after its 220 came in plaintext, and would
	// be taken for a reply inside TLS by a careless client (CVE-2011-0411
	// in the other direction). A correct server sends nothing before the
	// handshake.
	if n := p.br.Buffered(); n > 0 {
		return nil, fmt.Errorf("server sent %d bytes after its 220 reply", n)
	}
	return nil, nil
}

// quit says QUIT without waiting for the reply.
func (p *prelude) quit() {
	p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(p.conn, "QUIT\r\n")
}

// close closes the connection and unregisters the context hook.
func (p *prelude) close() {
	p.stop()
	p.conn.Close()
}

// hasExtension reports whether an EHLO reply advertises ext.
func hasExtension(ehlo, ext string) bool {
	lines := strings.Split(ehlo, "\n")
	for _, line := range lines[1:] {
		keyword, _, _ := strings.Cut(line, " ")
		if strings.EqualFold(keyword, ext) {
			return true
		}
	}
	return false
}

// replayGreeting rebuilds the lines of a 220 greeting from its text.
func replayGreeting(text string) []byte {
	// go-smtp refuses lines over 2000 bytes; a greeting needs far less.
	const maxLine = 512
	lines := strings.Split(text, "\n")
	b := make([]byte, 0, len(text)+6*len(lines))
	for i, line := range lines {
		if len(line) > maxLine {
			line = line[:maxLine]
		}
		sep := byte('-')
		if i == len(lines)-1 {
			sep = ' '
		}
		b = append(b, '2', '2', '0', sep)
		b = append(b, line...)
		b = append(b, '\r', '\n')
	}
	return b
}

// errPreludeTooLong is returned when a server sends more than
// maxPreludeBytes before the handover.
var errPreludeTooLong = errors.New("server replies too long")

// preludeReader fails after n bytes.
type preludeReader struct {
	r io.Reader
	n int
}

func (l *preludeReader) Read(b []byte) (int, error) {
	if l.n <= 0 {
		return 0, errPreludeTooLong
	}
	if len(b) > l.n {
		b = b[:l.n]
	}
	n, err := l.r.Read(b)
	l.n -= n
	return n, err
}
