package smtpapp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

// Server is one SMTP server: a set of listeners sharing a host name, limits
// and TLS settings.
type Server struct {
	// Listen are the addresses this server accepts connections on, each
	// with its TLS mode.
	Listen []*Listener `json:"listen,omitempty"`

	// Hostname is the name used in the greeting, in EHLO replies, in the
	// Received header and as the certificate name (also the default SNI
	// for clients that send none). Default: the app's hostname.
	Hostname string `json:"hostname,omitempty"`

	// RequireTLS refuses MAIL FROM with `530 5.7.0` until the client has
	// started TLS. Use it for submission servers. Default: false (an MX
	// must accept plaintext mail from the internet).
	RequireTLS bool `json:"require_tls,omitempty"`

	// MaxMessageSize is the largest message accepted, in bytes; it is
	// advertised with the SIZE extension and enforced while receiving.
	// Default: 52428800 (50 MiB).
	MaxMessageSize int64 `json:"max_message_size,omitempty"`

	// MaxRecipients is the most recipients accepted in one transaction
	// (RFC 5321 requires at least 100). Default: 100.
	MaxRecipients int `json:"max_recipients,omitempty"`

	// MaxConnections is the most concurrent connections this server
	// serves; further clients get `421 4.7.0` and are disconnected.
	// Default: 1000.
	MaxConnections int `json:"max_connections,omitempty"`

	// MaxLineLength is the longest command or message line accepted, in
	// bytes. A longer line ends the session. Default: 10000.
	MaxLineLength int `json:"max_line_length,omitempty"`

	// ReadTimeout is how long the server waits for the next command or the
	// next piece of message data. Default: 5m (RFC 5321, 4.5.3.2.7).
	ReadTimeout caddy.Duration `json:"read_timeout,omitempty"`

	// WriteTimeout is how long a reply may take to be written.
	// Default: 1m.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// Routes, when given, replace the app's routes for mail this server
	// accepts: which recipient domains it takes, and where they go. A
	// gateway and the backend it relays to can so run in one Caddy.
	// Default: the app's routes.
	Routes []*Route `json:"routes,omitempty"`

	// TLSConnectionPolicies configure STARTTLS and implicit TLS the Caddy
	// way (protocols, cipher suites, curves, client authentication, ...).
	// Whatever they say, this server always sets `default_sni` to its
	// hostname when unset, offers no ALPN (unless set), disables TLS
	// session tickets and requires TLS 1.2 or newer.
	// Default: one policy with Caddy's defaults.
	TLSConnectionPolicies caddytls.ConnectionPolicies `json:"tls_connection_policies,omitempty"`

	// CertificateWait is how long a TLS handshake is held when the
	// certificate for the server's hostname is not available yet (just
	// after start, or after a reload added the name) before it fails.
	// Default: 10s.
	CertificateWait caddy.Duration `json:"certificate_wait,omitempty"`

	name      string
	app       *App
	logger    *zap.Logger
	tlsConfig *tls.Config
	tlsMin    uint16

	running  []*listener
	slots    chan struct{} // one per allowed concurrent connection
	connsMu  sync.Mutex
	conns    map[*trackedConn]struct{}
	draining atomic.Bool
}

// Listener is one listening address of a server.
type Listener struct {
	// Address is a Caddy network address, e.g. `:25`, `127.0.0.1:2525`
	// or `tcp6/[::1]:587`. Listeners are shared across config reloads, so
	// a reload never refuses connections.
	Address string `json:"address,omitempty"`

	// TLS is the TLS mode of this listener:
	//
	// | mode       | meaning                                                  |
	// |------------|----------------------------------------------------------|
	// | `starttls` | plaintext greeting, STARTTLS offered (ports 25, 587)     |
	// | `implicit` | TLS from the first byte (port 465, RFC 8314)             |
	// | `off`      | no TLS at all; only if you really mean it                 |
	//
	// Default: `starttls`.
	TLS string `json:"tls,omitempty"`

	addr caddy.NetworkAddress
}

// TLS modes of a listener.
const (
	TLSStartTLS = "starttls"
	TLSImplicit = "implicit"
	TLSOff      = "off"
)

const (
	defaultMaxMessageSize  = 50 << 20
	defaultMaxRecipients   = 100
	defaultMaxConnections  = 1000
	defaultMaxLineLength   = 10000
	defaultReadTimeout     = 5 * time.Minute
	defaultWriteTimeout    = time.Minute
	defaultCertificateWait = 10 * time.Second
)

func (s *Server) provision(ctx caddy.Context, app *App, name string) error {
	s.name = name
	s.app = app
	s.logger = app.logger.Named("server." + name)
	if s.Hostname == "" {
		s.Hostname = app.Hostname
	}
	s.Hostname = normalizeHostname(s.Hostname)
	if s.MaxMessageSize == 0 {
		s.MaxMessageSize = defaultMaxMessageSize
	}
	if s.MaxRecipients == 0 {
		s.MaxRecipients = defaultMaxRecipients
	}
	if s.MaxConnections == 0 {
		s.MaxConnections = defaultMaxConnections
	}
	if s.MaxLineLength == 0 {
		s.MaxLineLength = defaultMaxLineLength
	}
	if s.ReadTimeout == 0 {
		s.ReadTimeout = caddy.Duration(defaultReadTimeout)
	}
	if s.WriteTimeout == 0 {
		s.WriteTimeout = caddy.Duration(defaultWriteTimeout)
	}
	if s.CertificateWait == 0 {
		s.CertificateWait = caddy.Duration(defaultCertificateWait)
	}
	for _, l := range s.Listen {
		if l == nil {
			return errors.New("empty listener")
		}
		if l.TLS == "" {
			l.TLS = TLSStartTLS
		}
		switch l.TLS {
		case TLSStartTLS, TLSImplicit, TLSOff:
		default:
			return fmt.Errorf("listen %q: unknown tls mode %q (want starttls, implicit or off)", l.Address, l.TLS)
		}
		na, err := caddy.ParseNetworkAddress(l.Address)
		if err != nil {
			return fmt.Errorf("listen %q: %w", l.Address, err)
		}
		if na.IsUnixNetwork() || na.IsFdNetwork() {
			// sockets without ports are fine; they are stream sockets
		} else if na.Network != "tcp" && na.Network != "tcp4" && na.Network != "tcp6" {
			return fmt.Errorf("listen %q: network %q is not a stream network", l.Address, na.Network)
		}
		l.addr = na
	}
	for i, r := range s.Routes {
		if r == nil {
			return fmt.Errorf("route %d: empty definition", i)
		}
		if err := r.provision(ctx, app.Hostname); err != nil {
			return fmt.Errorf("route %d: %w", i, err)
		}
	}
	s.slots = make(chan struct{}, s.MaxConnections)
	s.conns = make(map[*trackedConn]struct{})
	if s.tlsEnabled() {
		if err := s.provisionTLS(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) validate() error {
	if len(s.Listen) == 0 {
		return errors.New("no listen addresses")
	}
	if err := validateHostname(s.Hostname); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if s.RequireTLS && !s.tlsEnabled() {
		return errors.New("require_tls is set but every listener has tls off")
	}
	if s.MaxMessageSize < 0 || s.MaxRecipients < 0 || s.MaxConnections < 0 || s.MaxLineLength < 0 {
		return errors.New("limits must not be negative")
	}
	if s.ReadTimeout < 0 || s.WriteTimeout < 0 || s.CertificateWait < 0 {
		return errors.New("timeouts must not be negative")
	}
	if s.MaxRecipients < 100 {
		s.logger.Warn("max_recipients is below the 100 that RFC 5321 requires", zap.Int("max_recipients", s.MaxRecipients))
	}
	if s.MaxLineLength < 1000 {
		return fmt.Errorf("max_line_length %d is below the 1000 bytes RFC 5321 allows", s.MaxLineLength)
	}
	return nil
}

// tlsEnabled reports whether any listener uses TLS.
func (s *Server) tlsEnabled() bool {
	for _, l := range s.Listen {
		if l.TLS != TLSOff {
			return true
		}
	}
	return false
}

// start binds (or joins) every listener's socket and starts serving.
func (s *Server) start() error {
	for _, l := range s.Listen {
		for offset := uint(0); offset < l.addr.PortRangeSize(); offset++ {
			sock, err := acquireSocket(s.app.ctx, l.addr, offset)
			if err != nil {
				s.releaseListeners()
				return fmt.Errorf("listen %q: %w", l.Address, err)
			}
			s.running = append(s.running, s.newListener(l, sock))
		}
	}
	for _, rl := range s.running {
		rl.serve()
		s.logger.Info("listening", zap.String("address", rl.sock.ln.Addr().String()), zap.String("tls", rl.cfg.TLS))
	}
	return nil
}

// releaseListeners undoes a partial start.
func (s *Server) releaseListeners() {
	for _, rl := range s.running {
		releaseSocket(rl.sock)
	}
	s.running = nil
}

// Addrs returns the bound addresses of the running listeners, in the order
// of Listen (useful when listening on port 0).
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, 0, len(s.running))
	for _, rl := range s.running {
		out = append(out, rl.sock.ln.Addr())
	}
	return out
}

// stopAccepting hands the server's sockets over: new connections go to the
// newest config that listens on them (or the socket closes).
func (s *Server) stopAccepting() {
	for _, rl := range s.running {
		rl.sock.unregister(rl)
		releaseSocket(rl.sock)
	}
}

// drain lets open sessions finish until ctx is done, then closes the
// connections that remain. With polite set, a session between transactions
// is told to leave (421 4.3.2) at its next MAIL.
func (s *Server) drain(ctx context.Context, polite bool) {
	s.draining.Store(polite)
	var wg sync.WaitGroup
	for _, rl := range s.running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rl.smtp.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				s.logger.Debug("smtp shutdown", zap.Error(err))
			}
		}()
	}
	wg.Wait()
	if n := s.closeAll(); n > 0 {
		s.logger.Warn("grace period over: closed open connections", zap.Int("connections", n))
	}
}

// closeAll closes every tracked connection and returns how many there were.
func (s *Server) closeAll() int {
	s.connsMu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connsMu.Unlock()
	for _, c := range conns {
		c.Conn.Close()
	}
	return len(conns)
}

// newSMTPServer configures a go-smtp server for one listener.
func (s *Server) newSMTPServer(l *Listener) *smtp.Server {
	srv := smtp.NewServer(&backend{srv: s})
	srv.Domain = s.Hostname
	srv.MaxRecipients = s.MaxRecipients
	srv.MaxMessageBytes = s.MaxMessageSize
	srv.MaxLineLength = s.MaxLineLength
	srv.ReadTimeout = time.Duration(s.ReadTimeout)
	srv.WriteTimeout = time.Duration(s.WriteTimeout)
	srv.EnableSMTPUTF8 = true
	srv.EnableREQUIRETLS = true
	srv.EnableDSN = true
	srv.AllowInsecureAuth = false
	srv.ErrorLog = zapPrintfLogger{s.logger}
	if l.TLS != TLSOff {
		srv.TLSConfig = s.tlsConfig
	}
	return srv
}

// Interface guards
var (
	_ smtp.Backend = (*backend)(nil)
)
