package smtpapp

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
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

	// BareLineEndings says what to do with message data whose lines do not
	// all end with CRLF (a bare CR or LF: the raw material of SMTP
	// smuggling). Whatever it says, only CRLF "." CRLF ends the data and a
	// NUL is refused.
	//
	// | value       | meaning                                               |
	// |-------------|-------------------------------------------------------|
	// | `reject`    | refuse the message with `550 5.6.0` (the default)     |
	// | `normalize` | accept it with every bare CR and LF turned into CRLF  |
	//
	// Default: reject.
	BareLineEndings string `json:"bare_line_endings,omitempty"`

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

	// Checks judge every recipient of mail this server receives, at RCPT
	// time, before the checks of the recipient's route (modules in the
	// `smtp.checks` namespace, e.g. `{"check": "dnsbl", ...}`); the first
	// that refuses decides the reply. Clients in relay_networks and
	// authenticated users are not checked. Default: none.
	Checks []json.RawMessage `json:"checks,omitempty" caddy:"namespace=smtp.checks inline_key=check"`

	checks []namedCheck

	// TLSConnectionPolicies configure STARTTLS and implicit TLS the Caddy
	// way (protocols, cipher suites, curves, client authentication, ...).
	// Whatever they say, this server always sets `default_sni` to its
	// hostname when unset, offers no ALPN (unless set), disables TLS
	// session tickets and requires TLS 1.2 or newer.
	// Default: one policy with Caddy's defaults.
	TLSConnectionPolicies caddytls.ConnectionPolicies `json:"tls_connection_policies,omitempty"`

	// Authentication enables SMTP AUTH (PLAIN and LOGIN, offered only over
	// TLS) with a module in the `smtp.authentication.providers` namespace, e.g.
	// `{"provider": "accounts", "accounts": [...]}`. Authenticated users
	// may send to any domain. Default: no AUTH.
	Authentication json.RawMessage `json:"authentication,omitempty" caddy:"namespace=smtp.authentication.providers inline_key=provider"`

	// RequireAuth refuses MAIL with `530 5.7.0` until the client has
	// authenticated (a submission-only server). Clients in RelayNetworks
	// are exempt. Default: false.
	RequireAuth bool `json:"require_auth,omitempty"`

	// RelayNetworks are client networks (CIDRs or addresses) that may send
	// to any domain without authenticating, e.g. an internal application
	// server. Everyone else may only send to the domains of the routes.
	// Default: none.
	RelayNetworks []string `json:"relay_networks,omitempty"`

	// MaxConnectionsPerIP is the most concurrent connections from one
	// client address (`421 4.7.0` beyond). Negative: no limit.
	// Default: 50.
	MaxConnectionsPerIP int `json:"max_connections_per_ip,omitempty"`

	// ConnectionRatePerIP is the most new connections one client address
	// may open per minute (`421 4.7.0` beyond). Negative: no limit.
	// Default: 300.
	ConnectionRatePerIP int `json:"connection_rate_per_ip,omitempty"`

	// MessageRatePerIP is the most messages one client address may start
	// per minute (MAIL answered `451 4.7.1` beyond). Negative: no limit.
	// Default: 1000.
	MessageRatePerIP int `json:"message_rate_per_ip,omitempty"`

	// RecipientRatePerIP is the most recipients one client address may
	// give per minute (RCPT answered `451 4.7.1` beyond). Negative: no
	// limit. Default: 5000.
	RecipientRatePerIP int `json:"recipient_rate_per_ip,omitempty"`

	// LimitIPv4Prefix is the prefix length by which IPv4 clients are
	// counted for the per-address limits (max_connections_per_ip, the
	// rates, failed logins): 32 counts every address on its own, 24 counts
	// a /24 as one client. Default: 32.
	LimitIPv4Prefix int `json:"limit_ipv4_prefix,omitempty"`

	// LimitIPv6Prefix is the prefix length by which IPv6 clients are
	// counted for the per-address limits. A site usually gets a /64 or
	// more, so counting by /128 would give one client 2^64 budgets.
	// Default: 64.
	LimitIPv6Prefix int `json:"limit_ipv6_prefix,omitempty"`

	// MaxMessagesPerConnection is the most transactions on one connection
	// (`421 4.7.0` and disconnect beyond). Default: 1000.
	MaxMessagesPerConnection int `json:"max_messages_per_connection,omitempty"`

	// MaxRecipientsPerConnection is the most recipients on one connection
	// across its transactions (`452 4.5.3` beyond). Default: 10000.
	MaxRecipientsPerConnection int `json:"max_recipients_per_connection,omitempty"`

	// MaxBadCommands is how many rejected commands (bad addresses, relay
	// attempts, failed logins) a connection may make before it is closed
	// with `421 4.7.0`. Default: 20.
	MaxBadCommands int `json:"max_bad_commands,omitempty"`

	// MaxAuthFailures is how many failed logins one client address may
	// make in 10 minutes (a username twice as many) before further
	// attempts are refused with `454 4.7.0`. Default: 5.
	MaxAuthFailures int `json:"max_auth_failures,omitempty"`

	// MaxSessionDuration limits how long one connection may last, however
	// busy. Default: 1h.
	MaxSessionDuration caddy.Duration `json:"max_session_duration,omitempty"`

	// TLSHandshakeTimeout limits the TLS handshake on implicit TLS
	// listeners. Default: 10s.
	TLSHandshakeTimeout caddy.Duration `json:"tls_handshake_timeout,omitempty"`

	// GreetingDelay holds the greeting back this long on plaintext and
	// STARTTLS listeners, and refuses a client that talks before it (an
	// "early talker", RFC 5321 section 4.3.1: spam software often does)
	// with `554 5.5.1` and a closed connection, as Postfix's postscreen
	// does. Each connection waits that long for its greeting, holding its
	// connection slot. Not on implicit TLS listeners, where the client
	// speaks first. Default: 0 (off).
	GreetingDelay caddy.Duration `json:"greeting_delay,omitempty"`

	// CertificateWait is how long a TLS handshake is held when the
	// certificate for the server's hostname is not available yet (just
	// after start, or after a reload added the name) before it fails.
	// Default: 10s.
	CertificateWait caddy.Duration `json:"certificate_wait,omitempty"`

	// TLSSessionCache, when set, lets clients resume TLS sessions from a
	// cache in this server's memory (see TLSSessionCache: not for an MX
	// that Microsoft's servers send to). Default: off (no resumption, no
	// session tickets).
	TLSSessionCache *TLSSessionCache `json:"tls_session_cache,omitempty"`

	name          string
	app           *App
	logger        *zap.Logger
	tlsConfig     *tls.Config
	auth          Authenticator
	relayNetworks IPNetworks
	l4            map[string]*listener // go-smtp servers fed by layer4, by TLS mode
	l4mu          sync.Mutex
	perIPMu       sync.Mutex
	perIP         map[string]int

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

	defaultMaxConnectionsPerIP        = 50
	defaultConnectionRatePerIP        = 300
	defaultMessageRatePerIP           = 1000
	defaultRecipientRatePerIP         = 5000
	defaultMaxMessagesPerConnection   = 1000
	defaultMaxRecipientsPerConnection = 10000
	defaultMaxBadCommands             = 20
	defaultMaxAuthFailures            = 5
	defaultMaxSessionDuration         = time.Hour
	defaultTLSHandshakeTimeout        = 10 * time.Second
)

// orDefault returns v, or def when v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

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
	s.MaxConnectionsPerIP = orDefault(s.MaxConnectionsPerIP, defaultMaxConnectionsPerIP)
	s.ConnectionRatePerIP = orDefault(s.ConnectionRatePerIP, defaultConnectionRatePerIP)
	s.MessageRatePerIP = orDefault(s.MessageRatePerIP, defaultMessageRatePerIP)
	s.RecipientRatePerIP = orDefault(s.RecipientRatePerIP, defaultRecipientRatePerIP)
	s.MaxMessagesPerConnection = orDefault(s.MaxMessagesPerConnection, defaultMaxMessagesPerConnection)
	s.MaxRecipientsPerConnection = orDefault(s.MaxRecipientsPerConnection, defaultMaxRecipientsPerConnection)
	s.MaxBadCommands = orDefault(s.MaxBadCommands, defaultMaxBadCommands)
	s.MaxAuthFailures = orDefault(s.MaxAuthFailures, defaultMaxAuthFailures)
	s.MaxSessionDuration = orDefault(s.MaxSessionDuration, caddy.Duration(defaultMaxSessionDuration))
	s.TLSHandshakeTimeout = orDefault(s.TLSHandshakeTimeout, caddy.Duration(defaultTLSHandshakeTimeout))
	nets, err := ParseNetworks(s.RelayNetworks)
	if err != nil {
		return fmt.Errorf("relay_networks: %w", err)
	}
	s.relayNetworks = nets
	if s.Authentication != nil {
		mod, err := ctx.LoadModule(s, "Authentication")
		if err != nil {
			return fmt.Errorf("loading authentication: %w", err)
		}
		auth, ok := mod.(Authenticator)
		if !ok {
			return fmt.Errorf("authentication: module %T is not an authenticator", mod)
		}
		s.auth = auth
	}
	s.perIP = make(map[string]int)
	s.l4 = make(map[string]*listener)
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
		na, err := ParseListenAddress(l.Address)
		if err != nil {
			return fmt.Errorf("listen %q: %w", l.Address, err)
		}
		l.addr = na
	}
	for i, r := range s.Routes {
		if r == nil {
			return fmt.Errorf("route %d: empty definition", i)
		}
		if err := r.provision(ctx, app); err != nil {
			return fmt.Errorf("route %d: %w", i, err)
		}
	}
	if s.Checks != nil {
		mods, err := ctx.LoadModule(s, "Checks")
		if err != nil {
			return fmt.Errorf("loading checks: %w", err)
		}
		if s.checks, err = recipientChecks(mods.([]any), nil); err != nil {
			return err
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

	if err := validateHostname(s.Hostname); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if s.RequireTLS && !s.tlsEnabled() {
		return errors.New("require_tls is set but every listener has tls off")
	}
	if s.MaxMessageSize < 0 || s.MaxRecipients < 0 || s.MaxConnections < 0 || s.MaxLineLength < 0 {
		return errors.New("limits must not be negative")
	}
	if s.ReadTimeout < 0 || s.WriteTimeout < 0 || s.CertificateWait < 0 || s.MaxSessionDuration < 0 || s.TLSHandshakeTimeout < 0 || s.GreetingDelay < 0 {
		return errors.New("timeouts must not be negative")
	}
	if s.LimitIPv4Prefix < 0 || s.LimitIPv4Prefix > 32 {
		return fmt.Errorf("limit_ipv4_prefix %d: want 1 to 32", s.LimitIPv4Prefix)
	}
	if s.LimitIPv6Prefix < 0 || s.LimitIPv6Prefix > 128 {
		return fmt.Errorf("limit_ipv6_prefix %d: want 1 to 128", s.LimitIPv6Prefix)
	}
	if s.MaxMessagesPerConnection < 0 || s.MaxRecipientsPerConnection < 0 || s.MaxBadCommands < 0 || s.MaxAuthFailures < 0 {
		return errors.New("per-connection limits must not be negative")
	}
	if s.RequireAuth && s.auth == nil {
		return errors.New("require_auth is set but no authentication is configured")
	}
	if s.auth != nil && !s.tlsEnabled() {
		return errors.New("authentication needs TLS (AUTH is only offered over TLS), but every listener has tls off")
	}
	if s.MaxRecipients < 100 {
		s.logger.Warn("max_recipients is below the 100 that RFC 5321 requires", zap.Int("max_recipients", s.MaxRecipients))
	}
	if s.MaxLineLength < 1000 {
		return fmt.Errorf("max_line_length %d is below the 1000 bytes RFC 5321 allows", s.MaxLineLength)
	}
	if c := s.TLSSessionCache; c != nil && (c.MaxSessions < 0 || c.Lifetime < 0) {
		return errors.New("tls_session_cache: max_sessions and lifetime must not be negative")
	}
	switch s.BareLineEndings {
	case "", "reject", "normalize":
	default:
		return fmt.Errorf("bare_line_endings must be reject or normalize, not %q", s.BareLineEndings)
	}
	return nil
}

// tlsEnabled reports whether any listener uses TLS. A server without
// listeners (served through layer4 only) always has TLS ready.
func (s *Server) tlsEnabled() bool {
	if len(s.Listen) == 0 {
		return true
	}
	for _, l := range s.Listen {
		if l.TLS != TLSOff {
			return true
		}
	}
	return false
}

func (s *Server) maxAuthFailures() int { return s.MaxAuthFailures }

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
	s.l4mu.Lock()
	all := append([]*listener(nil), s.running...)
	for _, l := range s.l4 {
		all = append(all, l)
	}
	s.l4mu.Unlock()
	for _, rl := range all {
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
		c.closeFor("shutdown")
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

// ParseListenAddress parses a listen address as Caddy does and checks what
// Caddy leaves to the bind: the network is a stream network, and the host
// is empty, an IP address or a host name, so that a typo such as
// 127.0.0.999 is refused when the config is loaded (and adapted), not when
// the listener is bound.
func ParseListenAddress(addr string) (caddy.NetworkAddress, error) {
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil {
		return na, err
	}
	if na.IsUnixNetwork() || na.IsFdNetwork() {
		return na, nil // sockets without ports are fine; they are stream sockets
	}
	if na.Network != "tcp" && na.Network != "tcp4" && na.Network != "tcp6" {
		return na, fmt.Errorf("network %q is not a stream network", na.Network)
	}
	host := na.Host
	if host == "" || strings.Contains(host, "{") { // a placeholder is checked when it is replaced
		return na, nil
	}
	if ip, zone, _ := strings.Cut(host, "%"); net.ParseIP(ip) != nil && (zone == "" || strings.Contains(ip, ":")) {
		return na, nil
	}
	if !isHostName(host) {
		return na, fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	return na, nil
}

// isHostName reports whether s is a DNS host name (RFC 1123 labels) whose
// last label is not all digits, as no top-level domain is.
func isHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// limitKey is the client a per-address limit counts ip as: the address
// itself, or its network under limit_ipv4_prefix / limit_ipv6_prefix.
func (s *Server) limitKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	bits := s.LimitIPv6Prefix
	if bits == 0 {
		bits = defaultLimitIPv6Prefix
	}
	if a.Is4() {
		bits = s.LimitIPv4Prefix
		if bits == 0 {
			bits = 32
		}
	}
	if bits >= a.BitLen() {
		return a.WithZone("").String()
	}
	p, err := a.WithZone("").Prefix(bits)
	if err != nil {
		return ip
	}
	return p.String()
}

// defaultLimitIPv6Prefix is the default of limit_ipv6_prefix.
const defaultLimitIPv6Prefix = 64
