package lmtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

const (
	// quitTimeout bounds the wait for the reply to QUIT.
	quitTimeout = 10 * time.Second
	// maxPreludeBytes bounds what we read before handing the connection
	// to go-smtp (greeting, LHLO and STARTTLS replies).
	maxPreludeBytes = 64 << 10
)

// conn is an open LMTP session: a go-smtp client in LMTP mode that has
// said LHLO, and what happened to TLS on the way.
type conn struct {
	client *smtp.Client
	result tlsupgrade.Result
	local  bool        // a unix socket
	stop   func() bool // unregisters the close-on-ctx-done hook
	once   sync.Once
}

// close says QUIT (waiting a little for the reply) unless the context of
// the session has ended, then closes the connection.
func (c *conn) close() {
	c.once.Do(func() {
		if c.stop() {
			c.client.CommandTimeout = min(c.client.CommandTimeout, quitTimeout)
			if c.client.Quit() == nil {
				return
			}
		}
		c.client.Close()
	})
}

// dial connects to the server and says LHLO; on TCP it upgrades with
// STARTTLS first when the policy asks for it and the server offers it.
// ctx bounds the session: when it ends, the connection is closed.
func (l *LMTP) dial(ctx context.Context) (*conn, error) {
	level := tlsupgrade.Level(l.TLS)
	if level == "" {
		level = tlsupgrade.LevelOpportunistic
	}
	res := tlsupgrade.Result{Level: level, Policy: string(level)}
	nc, err := l.connect(ctx)
	if err != nil {
		return nil, err
	}
	if l.network == "unix" {
		res.Level, res.Policy = tlsupgrade.LevelNone, string(tlsupgrade.LevelNone)
		return l.handover(ctx, nc, false, nil, res)
	}
	if level == tlsupgrade.LevelNone {
		res.Fallback = "tls disabled by policy"
		return l.handover(ctx, nc, false, nil, res)
	}
	return l.startTLS(ctx, nc, res)
}

// connect opens the socket.
func (l *LMTP) connect(ctx context.Context) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, time.Duration(l.ConnectTimeout))
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, l.network, l.addr)
	if err != nil {
		return nil, &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.1",
			Message: "the LMTP server does not answer", Err: err}
	}
	return nc, nil
}

// startTLS reads the greeting, says LHLO and, when STARTTLS is offered,
// upgrades the connection; then it hands the session to go-smtp, which
// says LHLO again (on the new TLS session, as RFC 3207 requires). At the
// opportunistic level a server without STARTTLS, a refused STARTTLS and a
// failed handshake (on a second connection) leave the session in
// plaintext; at required and verify they end it.
func (l *LMTP) startTLS(ctx context.Context, nc net.Conn, res tlsupgrade.Result) (*conn, error) {
	required := res.Level != tlsupgrade.LevelOpportunistic
	defer context.AfterFunc(ctx, func() { nc.Close() })()
	br := bufio.NewReader(io.LimitReader(nc, maxPreludeBytes))
	r := textproto.NewReader(br)
	cmd := func(line string, want int) (string, error) {
		nc.SetDeadline(time.Now().Add(l.commandTimeout()))
		if line != "" {
			if _, err := io.WriteString(nc, line+"\r\n"); err != nil {
				return "", err
			}
		}
		_, msg, err := r.ReadResponse(want)
		return msg, err
	}
	fail := func(msg string, err error) (*conn, error) {
		nc.Close()
		return nil, &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.7.0", Message: msg, Err: err}
	}
	if _, err := cmd("", 220); err != nil {
		return fail("no greeting from the LMTP server", err)
	}
	ehlo, err := cmd("LHLO "+l.localName, 250)
	if err != nil {
		return fail("LHLO refused", err)
	}
	res.Offered = hasExtension(ehlo, "STARTTLS")
	if !res.Offered {
		if required {
			return fail("the LMTP server does not offer STARTTLS", nil)
		}
		res.Fallback = "starttls not offered"
		return l.handover(ctx, nc, true, buffered(br), res)
	}
	if _, err := cmd("STARTTLS", 220); err != nil {
		var te *textproto.Error
		if !errors.As(err, &te) || required {
			return fail("STARTTLS failed", err)
		}
		// The server stays in plaintext after a 4xx/5xx (RFC 3207).
		res.Fallback = fmt.Sprintf("starttls refused: %d %s", te.Code, te.Msg)
		return l.handover(ctx, nc, true, buffered(br), res)
	}
	if br.Buffered() > 0 {
		// Bytes sent before the handshake would be taken for replies
		// inside TLS (the STARTTLS injection of CVE-2011-0411).
		return fail("the LMTP server sent data after its STARTTLS reply", nil)
	}
	tc, err := l.handshake(nc, &res)
	if err != nil {
		nc.Close()
		if required || ctx.Err() != nil {
			return nil, &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.7.0",
				Message: "TLS with the LMTP server failed", Err: err}
		}
		// Opportunistic: carry on in plaintext on a second connection.
		res = tlsupgrade.Result{Level: res.Level, Policy: res.Policy, Offered: true,
			Fallback: "handshake failed: " + err.Error()}
		plain, err := l.connect(ctx)
		if err != nil {
			return nil, err
		}
		return l.handover(ctx, plain, false, nil, res)
	}
	return l.handover(ctx, tc, true, nil, res)
}

// handshake runs the TLS handshake and records its outcome in res. At the
// verify level a certificate that is not valid for the host is an error;
// below, it is only recorded (RFC 7435: opportunistic TLS must not fail on
// a certificate nobody could check).
func (l *LMTP) handshake(nc net.Conn, res *tlsupgrade.Result) (*tls.Conn, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}
	if net.ParseIP(l.host) == nil {
		cfg.ServerName = l.host
	}
	tc := tls.Client(nc, cfg)
	nc.SetDeadline(time.Now().Add(tlsupgrade.DefaultHandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	cs := tc.ConnectionState()
	res.TLS = true
	res.Version, res.Cipher = tlsupgrade.VersionName(cs.Version), tlsupgrade.CipherName(cs.CipherSuite)
	if len(cs.PeerCertificates) > 0 {
		res.PeerName = cs.PeerCertificates[0].Subject.CommonName
		if names := cs.PeerCertificates[0].DNSNames; len(names) > 0 {
			res.PeerName = names[0]
		}
	}
	if err := tlsupgrade.VerifyPeer(cs, l.host, l.roots); err != nil {
		res.VerifyError = err.Error()
		if res.Level == tlsupgrade.LevelVerify {
			return nil, fmt.Errorf("certificate of %s: %w", l.host, err)
		}
	} else {
		res.Verified = true
	}
	return tc, nil
}

// handover gives the connection to a go-smtp client in LMTP mode and has
// it say LHLO. greeted says that the greeting was read already (go-smtp's
// client wants one: it gets a stand-in); pending is what the server sent
// after it that was read too.
func (l *LMTP) handover(ctx context.Context, nc net.Conn, greeted bool, pending []byte, res tlsupgrade.Result) (*conn, error) {
	nc.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	if greeted {
		pending = append([]byte("220 greeted\r\n"), pending...)
	}
	timeout := l.commandTimeout()
	c := smtp.NewClientLMTP(&boundedConn{Conn: nc, pending: pending, writeTimeout: timeout})
	c.CommandTimeout = timeout
	if l.Timeout > 0 {
		c.SubmissionTimeout = time.Duration(l.Timeout)
	}
	if err := c.Hello(l.localName); err != nil {
		stop()
		c.Close()
		// Temporary whatever the reply: a refused LHLO is a problem of the
		// server or of our configuration, never of the message.
		return nil, &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.2", Message: "LHLO failed", Err: err}
	}
	return &conn{client: c, result: res, local: l.network == "unix", stop: stop}, nil
}

// commandTimeout is the configured reply timeout or the default (go-smtp
// keeps its own default for the replies after the data).
func (l *LMTP) commandTimeout() time.Duration {
	if l.Timeout > 0 {
		return time.Duration(l.Timeout)
	}
	return tlsupgrade.DefaultCommandTimeout
}

// buffered returns the bytes br has read but not consumed.
func buffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// hasExtension reports whether an LHLO reply advertises ext.
func hasExtension(reply, ext string) bool {
	return slices.ContainsFunc(strings.Split(reply, "\n")[1:], func(line string) bool {
		keyword, _, _ := strings.Cut(line, " ")
		return strings.EqualFold(keyword, ext)
	})
}

// boundedConn is the connection given to go-smtp: it first reads pending,
// and it bounds every write, since go-smtp sets no deadline while it
// writes a message body.
type boundedConn struct {
	net.Conn
	pending      []byte
	writeTimeout time.Duration
}

func (c *boundedConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *boundedConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	return c.Conn.Write(b)
}
