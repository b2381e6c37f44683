// Package ldap is the `smtp.checks.ldap` check: recipient verification
// against an LDAP directory, so that mail for a user the directory does
// not know is refused at RCPT with 550 5.1.1 instead of being accepted and
// bounced later (backscatter to a forged sender).
package ldap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
	goldap "github.com/go-ldap/ldap/v3"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(LDAP{})
}

// LDAP looks each recipient up in an LDAP directory: a search under BaseDN
// with Filter, in which `{address}`, `{local}` and `{domain}` stand for the
// recipient (lower-cased, without a `+detail` after the local part, and
// escaped, so that an address cannot change the filter). A recipient with
// an entry is accepted; one without gets `550 5.1.1 User unknown`. The
// client never sees the directory's name or its answers (they are logged).
// When the directory cannot be asked (down, timeout, failed bind), the
// recipient gets what OnUnreachable says. Answers are cached, positive and
// negative, for all sessions. A few bound connections are kept open and
// reused.
type LDAP struct {
	// URL is the directory server: `ldap://host[:port]`,
	// `ldaps://host[:port]` (TLS from the start) or
	// `ldapi://<percent-encoded socket path>` (a Unix socket).
	URL string `json:"url,omitempty"`

	// StartTLS upgrades an `ldap://` connection with the StartTLS
	// operation before binding; a server that refuses it is unreachable.
	// Default: false.
	StartTLS bool `json:"start_tls,omitempty"`

	// CA are PEM files with the certificates trusted to sign the server's
	// certificate (for `ldaps://` and StartTLS). Default: the system's
	// roots. The certificate is always verified.
	CA []string `json:"ca,omitempty"`

	// ServerName is the name the server's certificate must be valid for.
	// Default: the host of URL.
	ServerName string `json:"server_name,omitempty"`

	// BindDN is the DN to bind as before searching. Default: none (an
	// anonymous search).
	BindDN string `json:"bind_dn,omitempty"`

	// BindPassword is BindDN's password. Placeholders such as
	// `{env.LDAP_PASSWORD}` or `{file./run/secrets/ldap}` are replaced
	// when the config is loaded; the password is never logged.
	BindPassword string `json:"bind_password,omitempty"`

	// BaseDN is where the search starts, e.g. `ou=people,dc=example,dc=com`.
	BaseDN string `json:"base_dn,omitempty"`

	// Filter is the search filter, with the placeholders `{address}`,
	// `{local}` and `{domain}`; it must use at least one.
	// Default: `(mail={address})`.
	Filter string `json:"filter,omitempty"`

	// Scope is how deep the search goes below BaseDN:
	//
	//	sub  | BaseDN and everything below it (default)
	//	one  | the entries directly below BaseDN
	//	base | BaseDN itself
	Scope string `json:"scope,omitempty"`

	// Timeout bounds connecting (with StartTLS and bind) and each search.
	// Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// PositiveTTL is how long a recipient found in the directory is
	// remembered. Default: 1h.
	PositiveTTL caddy.Duration `json:"positive_ttl,omitempty"`

	// NegativeTTL is how long a recipient not found is remembered.
	// Default: 5m.
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`

	// CacheSize is the most recipients remembered; beyond it, the one
	// used least recently is forgotten. Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`

	// PoolSize is the most connections open to the directory at once;
	// more concurrent lookups wait for one. Default: 4.
	PoolSize int `json:"pool_size,omitempty"`

	// OnUnreachable is what a recipient gets when the directory cannot be
	// asked:
	//
	//	tempfail | 451 4.4.3, the client tries again later (default)
	//	accept   | taken unverified
	OnUnreachable string `json:"on_unreachable,omitempty"`

	logger   *zap.Logger
	password string
	scope    int
	cache    *cache
	pool     *pool
}

const (
	defaultFilter      = "(mail={address})"
	defaultTimeout     = 5 * time.Second
	defaultPositiveTTL = time.Hour
	defaultNegativeTTL = 5 * time.Minute
	defaultCacheSize   = 100_000
	defaultPoolSize    = 4

	onUnreachableTempfail = "tempfail"
	onUnreachableAccept   = "accept"
)

var scopes = map[string]int{
	"sub":  goldap.ScopeWholeSubtree,
	"one":  goldap.ScopeSingleLevel,
	"base": goldap.ScopeBaseObject,
}

var (
	errUnknownUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
	errUnverified  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 3}, Message: "Recipient cannot be verified now, try again later"}
)

// CaddyModule returns the Caddy module information.
func (LDAP) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.ldap",
		New: func() caddy.Module { return new(LDAP) },
	}
}

// Provision checks the config, fills in the defaults, resolves the bind
// password and reads the CA files. It does not connect: the first lookup
// does.
func (l *LDAP) Provision(ctx caddy.Context) error {
	l.logger = ctx.Logger()
	if err := l.setDefaults(); err != nil {
		return fmt.Errorf("ldap: %w", err)
	}
	u, err := parseURL(l.URL)
	if err != nil {
		return fmt.Errorf("ldap: url: %w", err)
	}
	tlsConfig, err := l.tlsConfig(u)
	if err != nil {
		return fmt.Errorf("ldap: %w", err)
	}
	if l.BindPassword != "" {
		// The error of the replacer would quote part of the password.
		pw, err := caddy.NewReplacer().ReplaceOrErr(l.BindPassword, true, true)
		if err != nil || pw == "" {
			return errors.New("ldap: bind_password: a placeholder in it is unknown or empty")
		}
		l.password = pw
	}
	if l.password != "" && l.BindDN == "" {
		return errors.New("ldap: bind_password without bind_dn")
	}
	if l.BindDN != "" && l.password == "" {
		return errors.New("ldap: bind_dn without bind_password (anonymous searches need neither)")
	}
	if l.password != "" && u.Scheme == "ldap" && !l.StartTLS {
		l.logger.Warn("the bind password goes to the directory in clear text; use ldaps:// or start_tls",
			zap.String("url", l.URL))
	}
	l.cache = newCache(l.CacheSize)
	l.pool = &pool{
		url:      u,
		tls:      tlsConfig,
		startTLS: l.StartTLS,
		bindDN:   l.BindDN,
		password: l.password,
		timeout:  time.Duration(l.Timeout),
		slots:    make(chan struct{}, l.PoolSize),
		idle:     make(chan *goldap.Conn, l.PoolSize),
	}
	return nil
}

// setDefaults fills in and checks the fields that need no I/O.
func (l *LDAP) setDefaults() error {
	if l.URL == "" {
		return errors.New("url is required")
	}
	if l.BaseDN == "" {
		return errors.New("base_dn is required")
	}
	if _, err := goldap.ParseDN(l.BaseDN); err != nil {
		return fmt.Errorf("base_dn %q: %w", l.BaseDN, err)
	}
	if l.Filter == "" {
		l.Filter = defaultFilter
	}
	if !strings.Contains(l.Filter, "{address}") && !strings.Contains(l.Filter, "{local}") && !strings.Contains(l.Filter, "{domain}") {
		return fmt.Errorf("filter %q uses none of {address}, {local}, {domain}: every recipient would get the same answer", l.Filter)
	}
	if _, err := goldap.CompileFilter(buildFilter(l.Filter, "user", "example.com")); err != nil {
		return fmt.Errorf("filter %q: %w", l.Filter, err)
	}
	if l.Scope == "" {
		l.Scope = "sub"
	}
	scope, ok := scopes[l.Scope]
	if !ok {
		return fmt.Errorf("scope %q: want sub, one or base", l.Scope)
	}
	l.scope = scope
	for _, d := range []struct {
		field *caddy.Duration
		def   time.Duration
	}{{&l.Timeout, defaultTimeout}, {&l.PositiveTTL, defaultPositiveTTL}, {&l.NegativeTTL, defaultNegativeTTL}} {
		if *d.field == 0 {
			*d.field = caddy.Duration(d.def)
		}
	}
	if l.CacheSize == 0 {
		l.CacheSize = defaultCacheSize
	}
	if l.PoolSize == 0 {
		l.PoolSize = defaultPoolSize
	}
	if l.Timeout < 0 || l.PositiveTTL < 0 || l.NegativeTTL < 0 || l.CacheSize < 0 || l.PoolSize < 0 {
		return errors.New("timeout, ttls, cache_size and pool_size must not be negative")
	}
	switch l.OnUnreachable {
	case "":
		l.OnUnreachable = onUnreachableTempfail
	case onUnreachableTempfail, onUnreachableAccept:
	default:
		return fmt.Errorf("on_unreachable %q: want tempfail or accept", l.OnUnreachable)
	}
	return nil
}

// parseURL parses an ldap://, ldaps:// or ldapi:// URL. The socket path of
// ldapi:// is percent-encoded in the host (RFC 4516 style), which net/url
// does not take.
func parseURL(s string) (*url.URL, error) {
	if rest, ok := strings.CutPrefix(s, "ldapi://"); ok {
		host, _, _ := strings.Cut(rest, "/")
		path, err := url.PathUnescape(host)
		if err != nil || path == "" {
			return nil, fmt.Errorf("%q: want ldapi://<percent-encoded socket path>", s)
		}
		return &url.URL{Scheme: "ldapi", Host: path}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ldap" && u.Scheme != "ldaps" {
		return nil, fmt.Errorf("%q: want ldap://, ldaps:// or ldapi://", s)
	}
	if u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("%q: want only a host and a port (give the base DN and filter as options)", s)
	}
	return u, nil
}

// tlsConfig returns the TLS settings for the connection to u, or nil for
// a connection without TLS (then TLS options are a mistake).
func (l *LDAP) tlsConfig(u *url.URL) (*tls.Config, error) {
	if l.StartTLS && u.Scheme != "ldap" {
		return nil, fmt.Errorf("start_tls is for ldap:// URLs, not %s://", u.Scheme)
	}
	if u.Scheme != "ldaps" && !l.StartTLS {
		if len(l.CA) > 0 || l.ServerName != "" {
			return nil, errors.New("ca and server_name need TLS: use ldaps:// or start_tls")
		}
		return nil, nil
	}
	cfg := &tls.Config{ServerName: l.ServerName, MinVersion: tls.VersionTLS12}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	if len(l.CA) > 0 {
		cfg.RootCAs = x509.NewCertPool()
		for _, f := range l.CA {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("ca: %w", err)
			}
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca: %s: no PEM certificate in it", f)
			}
		}
	}
	return cfg, nil
}

// Cleanup closes the pooled connections.
func (l *LDAP) Cleanup() error {
	if l.pool != nil {
		l.pool.close()
	}
	return nil
}

// CheckRecipient implements smtpapp.RecipientCheck.
func (l *LDAP) CheckRecipient(ctx context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	local, domain := splitAddress(in.Recipient)
	addr := local + "@" + domain
	now := time.Now()
	if found, ok := l.cache.get(addr, now); ok {
		return verdict(found, " (cached)")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(l.Timeout))
	defer cancel()
	found, err := l.pool.search(ctx, l.searchRequest(local, domain))
	if err != nil {
		reason := "directory not reachable: " + err.Error()
		if l.OnUnreachable == onUnreachableAccept {
			l.logger.Warn("recipient not verified, taken as configured", zap.String("rcpt", in.Recipient), zap.String("reason", reason))
			return smtpapp.Accept()
		}
		return smtpapp.Verdict{Result: smtpapp.VerdictTempfail, Reply: errUnverified, Reason: reason}
	}
	ttl := l.PositiveTTL
	if !found {
		ttl = l.NegativeTTL
	}
	l.cache.put(addr, found, now.Add(time.Duration(ttl)))
	return verdict(found, "")
}

// verdict is the answer for a recipient the directory has or has not.
func verdict(found bool, note string) smtpapp.Verdict {
	if found {
		return smtpapp.Accept()
	}
	return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errUnknownUser, Reason: "not in the directory" + note}
}

// searchRequest is the search for an address: no attributes, at most one
// entry (one is enough to know the user exists).
func (l *LDAP) searchRequest(local, domain string) *goldap.SearchRequest {
	return goldap.NewSearchRequest(l.BaseDN, l.scope, goldap.NeverDerefAliases, 1,
		int((time.Duration(l.Timeout)+time.Second-1)/time.Second), false,
		buildFilter(l.Filter, local, domain), []string{"1.1"}, nil)
}

// buildFilter puts the escaped parts of an address into the filter
// template.
func buildFilter(template, local, domain string) string {
	return strings.NewReplacer(
		"{address}", goldap.EscapeFilter(local+"@"+domain),
		"{local}", goldap.EscapeFilter(local),
		"{domain}", goldap.EscapeFilter(domain),
	).Replace(template)
}

// splitAddress lowercases addr and splits it at its last '@', without a
// +detail after the local part or a trailing dot of the domain (as the
// recipients check compares addresses).
func splitAddress(addr string) (local, domain string) {
	addr = strings.ToLower(addr)
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr, ""
	}
	local, domain = addr[:at], strings.TrimSuffix(addr[at+1:], ".")
	if base, _, ok := strings.Cut(local, "+"); ok && base != "" {
		local = base
	}
	return local, domain
}

// isNetwork reports whether err means the connection is no longer usable
// (as opposed to an LDAP result the server sent on a working connection).
func isNetwork(err error) bool {
	var le *goldap.Error
	if !errors.As(err, &le) {
		return true
	}
	var ne net.Error
	return le.ResultCode >= goldap.ErrorNetwork || errors.As(err, &ne)
}

// Interface guards
var (
	_ caddy.Provisioner      = (*LDAP)(nil)
	_ caddy.CleanerUpper     = (*LDAP)(nil)
	_ smtpapp.RecipientCheck = (*LDAP)(nil)
)
