// Package callout is the `smtp.checks.callout` check: recipient
// verification by asking the route's own next hop (an SMTP callout), so
// that a customer's server that knows its users decides, at our RCPT,
// which recipients exist.
package callout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func init() {
	caddy.RegisterModule(Callout{})
}

// Callout asks the route's delivery target (which must be able to: the
// relay target can) whether its next hop takes each recipient: EHLO, MAIL
// FROM:<>, RCPT TO, RSET, QUIT, over the target's TLS policy and login. A
// recipient the next hop refuses with 5xx gets `550 5.1.1` here; the
// client never sees the next hop's name or reply text (they are logged).
// Answers are cached, positive and negative, for all sessions.
type Callout struct {
	// PositiveTTL is how long a recipient the next hop took is
	// remembered. Default: 24h.
	PositiveTTL caddy.Duration `json:"positive_ttl,omitempty"`

	// NegativeTTL is how long a recipient the next hop refused is
	// remembered. Default: 1h.
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`

	// CacheSize is the most recipients remembered; beyond it, the entries
	// closest to expiry are dropped. Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`

	// Timeout bounds one callout. Default: 20s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// OnUnreachable is what a recipient gets when the next hop cannot be
	// asked or answers 4xx:
	//
	//	tempfail | 451 4.4.3, the client tries again later (default)
	//	accept   | taken; the message waits in our queue for the next hop
	OnUnreachable string `json:"on_unreachable,omitempty"`

	prober smtpapp.RecipientProber
	logger *zap.Logger
	cache  *cache
}

const (
	defaultPositiveTTL = 24 * time.Hour
	defaultNegativeTTL = time.Hour
	defaultCacheSize   = 100_000
	defaultTimeout     = 20 * time.Second

	onUnreachableTempfail = "tempfail"
	onUnreachableAccept   = "accept"
)

var (
	errUnknownUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
	errUnverified  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 3}, Message: "Recipient cannot be verified now, try again later"}
)

// CaddyModule returns the Caddy module information.
func (Callout) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.callout",
		New: func() caddy.Module { return new(Callout) },
	}
}

// Provision fills in the defaults.
func (c *Callout) Provision(ctx caddy.Context) error {
	c.logger = ctx.Logger()
	if c.PositiveTTL == 0 {
		c.PositiveTTL = caddy.Duration(defaultPositiveTTL)
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = caddy.Duration(defaultNegativeTTL)
	}
	if c.CacheSize == 0 {
		c.CacheSize = defaultCacheSize
	}
	if c.Timeout == 0 {
		c.Timeout = caddy.Duration(defaultTimeout)
	}
	if c.PositiveTTL < 0 || c.NegativeTTL < 0 || c.CacheSize < 0 || c.Timeout < 0 {
		return errors.New("callout: ttls, cache_size and timeout must not be negative")
	}
	switch c.OnUnreachable {
	case "":
		c.OnUnreachable = onUnreachableTempfail
	case onUnreachableTempfail, onUnreachableAccept:
	default:
		return fmt.Errorf("callout: on_unreachable %q: want tempfail or accept", c.OnUnreachable)
	}
	c.cache = newCache(c.CacheSize)
	return nil
}

// UseRouteTarget implements smtpapp.RouteTargetUser.
func (c *Callout) UseRouteTarget(t queue.Target) error {
	p, ok := t.(smtpapp.RecipientProber)
	if !ok {
		return fmt.Errorf("the route's target (%T) cannot be asked about recipients; use a relay target", t)
	}
	c.prober = p
	return nil
}

// CheckRecipient implements smtpapp.RecipientCheck.
func (c *Callout) CheckRecipient(ctx context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	key := strings.ToLower(in.Recipient)
	now := time.Now()
	if known, ok := c.cache.get(key, now); ok {
		if known {
			return smtpapp.Accept()
		}
		return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errUnknownUser, Reason: "refused by the next hop (cached)"}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.Timeout))
	defer cancel()
	err := c.prober.ProbeRecipient(ctx, in.Recipient)
	if err == nil {
		c.cache.put(key, true, now.Add(time.Duration(c.PositiveTTL)))
		return smtpapp.Accept()
	}
	if !queue.IsTemporary(err) {
		c.cache.put(key, false, now.Add(time.Duration(c.NegativeTTL)))
		return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errUnknownUser, Reason: "refused by the next hop: " + err.Error()}
	}
	if c.OnUnreachable == onUnreachableAccept {
		c.logger.Warn("recipient not verified, taken as configured", zap.String("rcpt", in.Recipient), zap.Error(err))
		return smtpapp.Accept()
	}
	return smtpapp.Verdict{Result: smtpapp.VerdictTempfail, Reply: errUnverified, Reason: "next hop not reachable: " + err.Error()}
}

// cache remembers callout answers until they expire, bounded in size.
type cache struct {
	mu      sync.Mutex
	max     int
	entries map[string]entry
}

type entry struct {
	known   bool
	expires time.Time
}

func newCache(max int) *cache { return &cache{max: max, entries: make(map[string]entry)} }

func (c *cache) get(key string, now time.Time) (known, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || now.After(e.expires) {
		return false, false
	}
	return e.known, true
}

func (c *cache) put(key string, known bool, expires time.Time) {
	if c.max == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.max {
		c.evict(time.Now())
	}
	c.entries[key] = entry{known, expires}
}

// evict drops expired entries, or else the one that expires first.
func (c *cache) evict(now time.Time) {
	var first string
	var firstAt time.Time
	for k, e := range c.entries {
		if now.After(e.expires) {
			delete(c.entries, k)
			continue
		}
		if first == "" || e.expires.Before(firstAt) {
			first, firstAt = k, e.expires
		}
	}
	if len(c.entries) >= c.max && first != "" {
		delete(c.entries, first)
	}
}

// Interface guards
var (
	_ caddy.Provisioner       = (*Callout)(nil)
	_ smtpapp.RecipientCheck  = (*Callout)(nil)
	_ smtpapp.RouteTargetUser = (*Callout)(nil)
)
