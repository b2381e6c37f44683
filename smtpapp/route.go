package smtpapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Route sends the recipients it matches to one delivery target. Routes are
// evaluated in order; the first route that matches a recipient gets it.
//
// A route matches a recipient when its domains (if any) contain the
// recipient's domain and every matcher of its match set matches. Relay
// control follows the domains: mail for a recipient is accepted from
// anyone only when a route that limits recipients (by `domains` or a
// `recipient_domain` matcher) matches it. A route without such a limit
// only chooses the target for mail accepted otherwise (from authenticated
// users or relay networks), e.g. a smarthost for one sender domain.
type Route struct {
	// Domains are the recipient domains this route accepts, matched without
	// regard to case. `*.example.com` matches every subdomain of
	// example.com (but not example.com itself). A shorthand for the
	// `recipient_domain` matcher.
	Domains []string `json:"domains,omitempty"`

	// Match is a set of matchers (modules in the `smtp.matchers`
	// namespace, keyed by name) that must all match, e.g.
	// `{"sender_domain": ["corp.example"], "authenticated": true}`.
	// Default: no matchers (only Domains decide).
	Match caddy.ModuleMap `json:"match,omitempty" caddy:"namespace=smtp.matchers"`

	// Deliver is the delivery target for recipients this route accepts,
	// a module in the `smtp.targets` namespace, e.g.
	// `{"target": "maildir", "path": "/var/mail/{domain}"}`.
	Deliver json.RawMessage `json:"deliver,omitempty" caddy:"namespace=smtp.targets inline_key=target"`

	// Checks judge every recipient this route takes, at RCPT time, in
	// order (modules in the `smtp.checks` namespace, e.g.
	// `{"check": "recipients", "addresses": ["alice@example.com"]}`); the
	// first that refuses decides the reply. Default: none (every recipient
	// is taken, unless the target refuses it).
	Checks []json.RawMessage `json:"checks,omitempty" caddy:"namespace=smtp.checks inline_key=check"`

	checks      []namedCheck
	matchers    []RouteMatcher
	limitsRcpts bool // Domains or a recipient-limiting matcher
	target      queue.Target
}

// RouteMatcher is implemented by the modules of the `smtp.matchers`
// namespace: a condition on the envelope and the client that a route puts
// on the recipients it takes.
type RouteMatcher interface {
	// MatchRoute reports whether the recipient (with its message's
	// envelope and client) matches.
	MatchRoute(in MatchInput) bool
}

// RecipientLimiter is implemented by matchers that limit which recipients
// a route takes (such as `recipient_domain`). A route with one is open to
// anyone for the recipients it matches; see Route.
type RecipientLimiter interface {
	RouteMatcher
	// LimitsRecipients reports whether the matcher restricts recipients.
	LimitsRecipients() bool
}

// MatchInput is what a route matcher sees of one recipient: the values are
// the same when the session checks relay control at RCPT and when the
// queue routes the accepted message.
type MatchInput struct {
	// Sender is the envelope sender ("" for the null sender).
	Sender string
	// Recipient is the recipient address; RecipientDomain its domain,
	// lowercased, without a trailing dot.
	Recipient       string
	RecipientDomain string
	// ClientIP is the address of the SMTP client that handed us the
	// message (nil for messages we made ourselves, such as DSNs).
	ClientIP net.IP
	// AuthUser is the SMTP AUTH username, "" when not authenticated.
	AuthUser string
	// Server is the name of the server that accepted the message.
	Server string
	// Helo is the name the client gave in EHLO/HELO.
	Helo string
	// TLSVersion ("TLSv1.3") and TLSCipher are the client's TLS session;
	// empty for plaintext.
	TLSVersion, TLSCipher string
	// Tx is the state the checks of the transaction share (nil outside a
	// session, when routing queued messages).
	Tx *Transaction
	// Trusted is set for clients that authenticated or are in the
	// server's relay_networks: sender authentication checks (SPF, DMARC,
	// DNS lists) do not judge their mail.
	Trusted bool
}

// NewMatchInput builds the matcher input for one recipient of a message.
func NewMatchInput(m *queue.Message, rcpt string) MatchInput {
	return MatchInput{
		Sender:          m.From,
		Recipient:       rcpt,
		RecipientDomain: queue.Domain(rcpt),
		ClientIP:        net.ParseIP(m.Client.Addr),
		AuthUser:        m.Client.AuthUser,
		Server:          m.Server,
		Helo:            m.Client.Helo,
		TLSVersion:      m.Client.TLSVersion,
		TLSCipher:       m.Client.TLSCipher,
	}
}

func (r *Route) provision(ctx caddy.Context, app *App) error {
	var err error
	if r.Domains, err = NormalizeDomainPatterns(r.Domains); err != nil {
		return err
	}
	r.limitsRcpts = len(r.Domains) > 0
	if r.Match != nil {
		mods, err := ctx.LoadModule(r, "Match")
		if err != nil {
			return fmt.Errorf("loading matchers: %w", err)
		}
		for name, mod := range mods.(map[string]any) {
			m, ok := mod.(RouteMatcher)
			if !ok {
				return fmt.Errorf("matcher %q: module %T is not a route matcher", name, mod)
			}
			if l, ok := m.(RecipientLimiter); ok && l.LimitsRecipients() {
				r.limitsRcpts = true
			}
			r.matchers = append(r.matchers, m)
		}
	}
	if len(r.Domains) == 0 && len(r.matchers) == 0 {
		return errors.New("no domains and no matchers")
	}
	if r.Deliver == nil {
		return errors.New("no delivery target")
	}
	mod, err := ctx.LoadModule(r, "Deliver")
	if err != nil {
		return fmt.Errorf("loading delivery target: %w", err)
	}
	t, ok := mod.(queue.Target)
	if !ok {
		return fmt.Errorf("module %T is not a delivery target", mod)
	}
	if err := app.provisionTarget(t); err != nil {
		return err
	}
	r.target = t
	return r.provisionChecks(ctx)
}

// NormalizeDomainPatterns lowercases recipient domain patterns, removes
// trailing dots and checks them: a domain, or `*.` and a domain.
func NormalizeDomainPatterns(patterns []string) ([]string, error) {
	for i, d := range patterns {
		n := normalizeHostname(d)
		base := strings.TrimPrefix(n, "*.")
		if err := validateHostname(base); err != nil || strings.Contains(base, "*") {
			return nil, fmt.Errorf("invalid domain %q", d)
		}
		patterns[i] = n
	}
	return patterns, nil
}

// MatchDomain reports whether a (normalised) domain matches one of the
// patterns of NormalizeDomainPatterns.
func MatchDomain(patterns []string, domain string) bool {
	for _, d := range patterns {
		if d == domain {
			return true
		}
		if suffix, ok := strings.CutPrefix(d, "*"); ok && strings.HasSuffix(domain, suffix) && len(domain) > len(suffix) {
			return true
		}
	}
	return false
}

// matches reports whether the route takes the recipient.
func (r *Route) matches(in MatchInput) bool {
	if len(r.Domains) > 0 && !MatchDomain(r.Domains, in.RecipientDomain) {
		return false
	}
	for _, m := range r.matchers {
		if !m.MatchRoute(in) {
			return false
		}
	}
	return true
}
