// Package iprev is the `smtp.checks.iprev` check: forward-confirmed
// reverse DNS (FCrDNS, RFC 8601 section 3): a PTR name of the client's
// address must resolve back to that address.
package iprev

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/checkopt"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/ttlcache"
	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(IPRev{})
}

// IPRev looks up the PTR names of the client's address and the addresses
// of each name (at most 10 names): iprev=pass when one of them is the
// client's address, fail when none is (or there is no PTR record),
// temperror when DNS failed. The result goes into the
// Authentication-Results header (iprev=pass policy.iprev=192.0.2.1); what
// a fail or temperror does to the recipient is set by Fail and TempError.
// Results are cached per address.
type IPRev struct {
	// Fail is what a client without forward-confirmed reverse DNS gets:
	// `accept` (only recorded) or `reject` (550 5.7.25). Default: accept.
	Fail string `json:"fail,omitempty"`

	// TempError is what a client gets when the lookups failed:
	// `accept` or `tempfail` (451 4.7.25). Default: accept.
	TempError string `json:"temperror,omitempty"`

	// Resolvers are the DNS servers to ask ("ip" or "ip:port"). Default:
	// the servers in /etc/resolv.conf.
	Resolvers []string `json:"resolvers,omitempty"`

	// Timeout bounds the lookups for one address. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// CacheTTL is how long the result for an address is kept. Default:
	// 10m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	resolver *resolver.Resolver
	logger   *zap.Logger
	cache    *ttlcache.Cache[string, cached]
}

type cached struct {
	value authres.ResultValue
	name  string // the confirmed name, for the log
}

const (
	actionAccept   = "accept"
	actionReject   = "reject"
	actionTempfail = "tempfail"

	defaultTimeout  = 5 * time.Second
	defaultCacheTTL = 10 * time.Minute
	cacheMax        = 100_000
	maxNames        = 10
)

var (
	errFail = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 25}, Message: "Reverse DNS validation failed"}
	errTemp = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 25}, Message: "Reverse DNS validation failed temporarily, try again later"}
)

// CaddyModule returns the Caddy module information.
func (IPRev) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.iprev",
		New: func() caddy.Module { return new(IPRev) },
	}
}

// Provision checks the options and sets up the resolver.
func (c *IPRev) Provision(ctx caddy.Context) error {
	c.logger = ctx.Logger()
	if err := checkopt.Actions("iprev",
		checkopt.Action{Field: &c.Fail, Name: "fail", Default: actionAccept, Allowed: []string{actionAccept, actionReject}},
		checkopt.Action{Field: &c.TempError, Name: "temperror", Default: actionAccept, Allowed: []string{actionAccept, actionTempfail}},
	); err != nil {
		return err
	}
	if c.Timeout < 0 || c.CacheTTL < 0 {
		return fmt.Errorf("iprev: timeout and cache_ttl must not be negative")
	}
	if c.Timeout == 0 {
		c.Timeout = caddy.Duration(defaultTimeout)
	}
	if c.CacheTTL == 0 {
		c.CacheTTL = caddy.Duration(defaultCacheTTL)
	}
	r, err := resolver.New(c.Resolvers, time.Duration(c.Timeout))
	if err != nil {
		return fmt.Errorf("iprev: %w", err)
	}
	c.resolver = r
	c.cache = ttlcache.New[string, cached](cacheMax)
	return nil
}

// CheckRecipient implements smtpapp.RecipientCheck.
func (c *IPRev) CheckRecipient(ctx context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	if in.Trusted {
		return smtpapp.Accept() // authenticated or relay_networks: not judged
	}
	if in.ClientIP == nil {
		return smtpapp.Accept()
	}
	r := c.result(ctx, in.ClientIP)
	in.Tx.SetAuthResult("iprev", &authres.IPRevResult{Value: r.value, IP: in.ClientIP.String()})
	note := string(r.value)
	if r.name != "" {
		note += " " + r.name
	}
	switch {
	case r.value == authres.ResultFail && c.Fail == actionReject:
		return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errFail, Reason: "iprev=fail", Note: note}
	case r.value == authres.ResultTempError && c.TempError == actionTempfail:
		return smtpapp.Verdict{Result: smtpapp.VerdictTempfail, Reply: errTemp, Reason: "iprev=temperror", Note: note}
	}
	return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: note}
}

// result returns the cached result for ip, or looks it up.
func (c *IPRev) result(ctx context.Context, ip net.IP) cached {
	key := ip.String()
	now := time.Now()
	if r, ok := c.cache.Get(key, now); ok {
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(c.Timeout))
	defer cancel()
	r := c.lookup(ctx, ip)
	if r.value == authres.ResultTempError {
		return r // not cached: the next transaction asks again
	}
	c.cache.Put(key, r, now, time.Duration(c.CacheTTL))
	return r
}

// lookup asks for the PTR names, then the addresses of each (at the same
// time).
func (c *IPRev) lookup(ctx context.Context, ip net.IP) cached {
	names, err := c.resolver.LookupPTR(ctx, ip)
	switch {
	case resolver.IsNotFound(err):
		return cached{value: authres.ResultFail}
	case err != nil:
		c.logger.Warn("iprev: PTR lookup failed", zap.String("ip", ip.String()), zap.Error(err))
		return cached{value: authres.ResultTempError}
	}
	if len(names) > maxNames {
		names = names[:maxNames]
	}
	type answer struct {
		name string
		ips  []net.IP
		err  error
	}
	answers := make(chan answer, len(names))
	for _, name := range names {
		go func() {
			ips, err := c.resolver.LookupIP(ctx, name)
			answers <- answer{name, ips, err}
		}()
	}
	temp := false
	for range names {
		a := <-answers
		for _, addr := range a.ips {
			if addr.Equal(ip) {
				return cached{value: authres.ResultPass, name: a.name}
			}
		}
		temp = temp || resolver.IsTemporary(a.err)
	}
	if temp {
		return cached{value: authres.ResultTempError}
	}
	return cached{value: authres.ResultFail}
}

// Concurrent implements smtpapp.ConcurrentCheck: the check only asks DNS.
func (*IPRev) Concurrent() {}

// Interface guards
var (
	_ smtpapp.ConcurrentCheck = (*IPRev)(nil)
	_ caddy.Provisioner       = (*IPRev)(nil)
	_ smtpapp.RecipientCheck  = (*IPRev)(nil)
)
