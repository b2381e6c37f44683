package smtpapp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// Inbound TLS handshakes that fail are logged at info (the peer, the SNI
// and versions it offered, and why) and counted in
// caddy_smtp_tls_handshake_failures_total{server,reason}. On implicit TLS
// listeners the handshake error says why; after STARTTLS go-smtp keeps
// the error to itself and answers "550 5.0.0 Handshake error", so the
// reason comes from what the client's ClientHello offered.

// clientHello is what a client offered in its ClientHello.
type clientHello struct {
	sni      string
	versions []uint16
}

// recordHello wraps the TLS config so that every ClientHello is noted on
// the tracked connection it came in on.
func recordHello(cfg *tls.Config) {
	next := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if tc := trackedOf(hello.Conn); tc != nil {
			h := &clientHello{sni: hello.ServerName, versions: append([]uint16(nil), hello.SupportedVersions...)}
			tc.state.note(func(cs *connState) { cs.hello = h })
		}
		if next != nil {
			return next(hello)
		}
		return nil, nil
	}
}

// handshakeErrorReply is go-smtp's reply to a failed STARTTLS handshake.
var handshakeErrorReply = []byte("550 5.0.0 Handshake error")

// handshakeFailed logs and counts a failed inbound handshake; err is nil
// when it is not known (after STARTTLS).
func (s *Server) handshakeFailed(tc *trackedConn, mode string, err error) {
	var hello *clientHello
	tc.state.note(func(cs *connState) { hello = cs.hello })
	reason := handshakeReason(hello, err)
	s.app.metrics.tlsHandshakeFailures.WithLabelValues(s.name, reason).Inc()
	fields := []zap.Field{zap.String("remote_ip", tc.ip), zap.String("tls", mode), zap.String("reason", reason)}
	if hello != nil {
		var vs []string
		for _, v := range hello.versions {
			vs = append(vs, tlsupgrade.VersionName(v))
		}
		fields = append(fields, zap.String("sni", hello.sni), zap.Strings("offered_versions", vs))
	}
	if err != nil {
		fields = append(fields, zap.String("error", err.Error()))
	}
	s.logger.Info("TLS handshake failed", fields...)
}

// handshakeReason names why a handshake failed, from a small fixed set
// (the metric's label values).
func handshakeReason(hello *clientHello, err error) string {
	if hello != nil && len(hello.versions) > 0 {
		newest := hello.versions[0]
		for _, v := range hello.versions {
			newest = max(newest, v)
		}
		if newest < tls.VersionTLS12 {
			return "protocol_version"
		}
	}
	var ne net.Error
	switch {
	case err == nil && hello == nil:
		return "no_client_hello" // not TLS, or the client gave up
	case err == nil:
		return "handshake_failure"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return "client_closed"
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "protocol version"):
		return "protocol_version"
	case strings.Contains(msg, "does not look like a TLS handshake"), strings.Contains(msg, "unsupported SSLv2"),
		strings.Contains(msg, "oversized record"), strings.Contains(msg, "unexpected message"):
		return "not_tls"
	case strings.Contains(msg, "remote error") && strings.Contains(msg, "certificate"):
		return "client_rejected_certificate"
	case strings.Contains(msg, "no cipher suite"), strings.Contains(msg, "no mutually supported"):
		return "no_shared_cipher"
	}
	return "handshake_failure"
}

// sawHandshakeError reports whether a plaintext write is go-smtp's reply
// to a failed STARTTLS handshake.
func sawHandshakeError(p []byte) bool { return bytes.HasPrefix(p, handshakeErrorReply) }
