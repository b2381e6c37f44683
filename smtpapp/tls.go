package smtpapp

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// provisionTLS builds the server's tls.Config from its connection policies.
//
// Certificates come from Caddy's certificate cache (CertMagic), so renewed
// certificates are served without a restart. When the certificate for one
// of our names is not in the cache yet (a fresh start, or a name added by a
// reload: the tls app obtains it asynchronously), the handshake is held for
// up to CertificateWait while we poll the cache, and the wait is logged. If
// the certificate is still missing the handshake fails; STARTTLS clients then
// usually retry, often in plaintext.
func (s *Server) provisionTLS(ctx caddy.Context) error {
	cp := s.TLSConnectionPolicies
	if len(cp) == 0 {
		cp = caddytls.ConnectionPolicies{new(caddytls.ConnectionPolicy)}
	}
	for _, p := range cp {
		if p.DefaultSNI == "" {
			// Many mail clients and MTAs send no SNI at all.
			p.DefaultSNI = s.Hostname
		}
		if p.ALPN == nil {
			// Non-nil and empty: no ALPN (Caddy's default is h2).
			p.ALPN = []string{}
		}
	}
	if err := cp.Provision(ctx); err != nil {
		return fmt.Errorf("tls connection policies: %w", err)
	}
	for _, p := range cp {
		cfg := p.TLSConfig
		if cfg == nil {
			continue
		}
		// Outlook and some other clients fail with Go's session tickets.
		cfg.SessionTicketsDisabled = true
		if cfg.MinVersion < tls.VersionTLS12 {
			cfg.MinVersion = tls.VersionTLS12
		}
		cfg.GetCertificate = s.waitForCertificate(cfg.GetCertificate, p.DefaultSNI)
		verify := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			// Called once per completed server handshake.
			s.app.metrics.tlsHandshakes.WithLabelValues(s.name, tlsupgrade.VersionName(cs.Version)).Inc()
			return nil
		}
	}
	s.TLSConnectionPolicies = cp
	s.tlsConfig = cp.TLSConfig(ctx)
	s.tlsConfig.SessionTicketsDisabled = true
	recordHello(s.tlsConfig)
	if s.TLSSessionCache != nil {
		tlsupgrade.NewServerSessions(s.TLSSessionCache.MaxSessions, time.Duration(s.TLSSessionCache.Lifetime)).Resume(s.tlsConfig)
	}
	return nil
}

// waitForCertificate wraps a GetCertificate function so that a handshake for
// one of our managed names waits briefly for a certificate that is being
// obtained.
func (s *Server) waitForCertificate(get func(*tls.ClientHelloInfo) (*tls.Certificate, error), defaultSNI string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := get(hello)
		if err == nil {
			return cert, nil
		}
		name := normalizeHostname(hello.ServerName)
		if name == "" {
			name = normalizeHostname(defaultSNI)
		}
		wait := time.Duration(s.CertificateWait)
		if wait <= 0 || !s.app.managedName(name) {
			return nil, err
		}
		s.logger.Warn("certificate not ready yet; holding the TLS handshake",
			zap.String("server_name", name),
			zap.String("remote_ip", remoteIP(hello.Conn.RemoteAddr())),
			zap.Duration("max_wait", wait))
		deadline := time.NewTimer(wait)
		defer deadline.Stop()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-hello.Context().Done():
				return nil, hello.Context().Err()
			case <-deadline.C:
				s.logger.Error("certificate still not ready; TLS handshake failed",
					zap.String("server_name", name), zap.Error(err))
				s.app.metrics.certificateWaits.WithLabelValues(s.name, "timeout").Inc()
				return nil, err
			case <-tick.C:
				if cert, err = get(hello); err == nil {
					s.logger.Info("certificate became ready", zap.String("server_name", name))
					s.app.metrics.certificateWaits.WithLabelValues(s.name, "ready").Inc()
					return cert, nil
				}
			}
		}
	}
}

// TLSSessionCache lets clients of a server resume their TLS sessions: a
// resumed handshake skips the certificate and its signature (TLS 1.3 PSK
// with (EC)DHE, RFC 8446 section 2.2; TLS 1.2 session tickets, RFC 5077).
// The sessions stay in this server's memory, single use, bound to the
// connection policy and certificate they were made with
// (tlsupgrade.ServerSessions); the cache starts empty with every config
// load.
//
// Go's TLS server sends the ticket in its first flight, before the client's
// Finished, and Microsoft's SMTP client (Exchange Online, outlook.com)
// then drops the connection during STARTTLS (golang/go#70232). That is why
// this is off by default: enable it only on servers whose clients are known
// (submission from your own clients, a hop between your own gateways), not
// on an MX that receives mail from the internet.
type TLSSessionCache struct {
	// MaxSessions is the most sessions kept; the oldest go first.
	// Default: 10000.
	MaxSessions int `json:"max_sessions,omitempty"`

	// Lifetime is how long a session can be resumed after the handshake
	// that made it. Default: 1h.
	Lifetime caddy.Duration `json:"lifetime,omitempty"`
}
