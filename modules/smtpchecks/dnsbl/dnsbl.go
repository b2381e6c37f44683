// Package dnsbl is the `smtp.checks.dnsbl` check: the client's address
// looked up in DNS blocklists (and allow lists, with negative weights),
// the weights of the zones that list it added up against a threshold.
package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/ttlcache"
	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(DNSBL{})
}

// DNSBL looks up the client's address in each zone (IPv4 as reversed
// octets, IPv6 as reversed nibbles, RFC 5782), at the same time, and adds
// the weights of the zones that list it; at Threshold or more, every
// recipient is refused with `554 5.7.1` naming the zones. Answers are
// cached per address. A zone that does not answer, or answers with one of
// the codes lists use for errors (127.255.255.0/24, as Spamhaus does for
// "query through an open resolver" or "rate limited", and 127.0.0.1), does
// not list the client; that is logged at warning.
type DNSBL struct {
	// Zones are the lists to ask. Required.
	Zones []Zone `json:"zones,omitempty"`

	// Threshold is the sum of weights from which the client is refused.
	// Default: 1.
	Threshold int `json:"threshold,omitempty"`

	// Resolvers are the DNS servers to ask ("ip" or "ip:port"). Lists
	// refuse queries from public resolvers: use your own. Default: the
	// servers in /etc/resolv.conf.
	Resolvers []string `json:"resolvers,omitempty"`

	// Timeout bounds the lookups of one client. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// CacheTTL is how long the result for an address is kept. Default: 5m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// CacheSize is the most addresses kept. Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`

	resolver *resolver.Resolver
	logger   *zap.Logger
	codes    [][]netip.Prefix // per zone

	cache *ttlcache.Cache[netip.Addr, cached]
}

// Zone is one DNS list.
type Zone struct {
	// Zone is the list's DNS zone, e.g. `zen.spamhaus.org`.
	Zone string `json:"zone,omitempty"`

	// Weight is added to the client's score when the zone lists it;
	// negative for an allow list (DNSWL). Default: 1.
	Weight int `json:"weight,omitempty"`

	// Codes are the answers that mean "listed": addresses or prefixes,
	// e.g. `127.0.0.2` or `127.0.0.0/24` (for a list whose return codes
	// mean different things, give the ones you count). Default: every
	// address in 127.0.0.0/8 but the error codes.
	Codes []string `json:"codes,omitempty"`
}

// cached is the verdict for an address.
type cached struct {
	score int
	zones []string
}

const (
	defaultTimeout   = 5 * time.Second
	defaultCacheTTL  = 5 * time.Minute
	defaultCacheSize = 100_000
)

var (
	loopback  = netip.MustParsePrefix("127.0.0.0/8")
	errorNets = []netip.Prefix{netip.MustParsePrefix("127.255.255.0/24"), netip.MustParsePrefix("127.0.0.1/32")}
)

// CaddyModule returns the Caddy module information.
func (DNSBL) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.dnsbl",
		New: func() caddy.Module { return new(DNSBL) },
	}
}

// Provision checks the zones and sets up the resolver.
func (b *DNSBL) Provision(ctx caddy.Context) error {
	b.logger = ctx.Logger()
	if len(b.Zones) == 0 {
		return errors.New("dnsbl: no zones")
	}
	if b.Threshold == 0 {
		b.Threshold = 1
	}
	if b.Timeout == 0 {
		b.Timeout = caddy.Duration(defaultTimeout)
	}
	if b.CacheTTL == 0 {
		b.CacheTTL = caddy.Duration(defaultCacheTTL)
	}
	if b.CacheSize == 0 {
		b.CacheSize = defaultCacheSize
	}
	if b.Timeout < 0 || b.CacheTTL < 0 || b.CacheSize < 0 {
		return errors.New("dnsbl: timeout, cache_ttl and cache_size must not be negative")
	}
	b.codes = make([][]netip.Prefix, len(b.Zones))
	for i := range b.Zones {
		z := &b.Zones[i]
		z.Zone = strings.ToLower(strings.Trim(z.Zone, "."))
		if z.Zone == "" {
			return fmt.Errorf("dnsbl: zone %d: empty name", i)
		}
		if z.Weight == 0 {
			z.Weight = 1
		}
		for _, c := range z.Codes {
			p, err := parseCode(c)
			if err != nil {
				return fmt.Errorf("dnsbl: zone %s: code %q: %w", z.Zone, c, err)
			}
			b.codes[i] = append(b.codes[i], p)
		}
	}
	r, err := resolver.New(b.Resolvers, 0)
	if err != nil {
		return fmt.Errorf("dnsbl: %w", err)
	}
	b.resolver = r
	b.cache = ttlcache.New[netip.Addr, cached](b.CacheSize)
	return nil
}

// parseCode reads an address or a prefix.
func parseCode(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// CheckRecipient implements smtpapp.RecipientCheck.
func (b *DNSBL) CheckRecipient(ctx context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	if in.Trusted {
		return smtpapp.Accept() // authenticated or relay_networks: not judged
	}
	ip, ok := netip.AddrFromSlice(in.ClientIP)
	if !ok {
		return smtpapp.Accept()
	}
	ip = ip.Unmap()
	res := b.lookup(ctx, ip)
	if res.score < b.Threshold {
		return smtpapp.Accept()
	}
	reply := &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: fmt.Sprintf("Service unavailable; client [%s] blocked using %s", ip, strings.Join(res.zones, ", "))}
	return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: reply,
		Reason: fmt.Sprintf("listed in %s (score %d, threshold %d)", strings.Join(res.zones, ", "), res.score, b.Threshold)}
}

// lookup returns the (cached) result for ip.
func (b *DNSBL) lookup(ctx context.Context, ip netip.Addr) cached {
	now := time.Now()
	if c, ok := b.cache.Get(ip, now); ok {
		return c
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(b.Timeout))
	defer cancel()
	listed := make([]bool, len(b.Zones))
	var wg sync.WaitGroup
	for i := range b.Zones {
		wg.Go(func() { listed[i] = b.listedIn(ctx, i, ip) })
	}
	wg.Wait()
	var c cached
	for i, l := range listed {
		if l {
			c.score += b.Zones[i].Weight
			if b.Zones[i].Weight > 0 {
				c.zones = append(c.zones, b.Zones[i].Zone)
			}
		}
	}
	b.cache.Put(ip, c, now, time.Duration(b.CacheTTL))
	return c
}

// listedIn asks zone i about ip.
func (b *DNSBL) listedIn(ctx context.Context, i int, ip netip.Addr) bool {
	z := b.Zones[i]
	name := QueryName(ip, z.Zone)
	answers, err := b.resolver.LookupA(ctx, name)
	if resolver.IsNotFound(err) {
		return false
	}
	if err != nil {
		b.logger.Warn("dnsbl lookup failed; not counted", zap.String("zone", z.Zone), zap.String("query", name), zap.Error(err))
		return false
	}
	for _, a := range answers {
		addr, ok := netip.AddrFromSlice(a)
		if !ok {
			continue
		}
		addr = addr.Unmap()
		if slices.ContainsFunc(errorNets, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			b.logger.Warn("dnsbl answered with an error code; not counted (is the resolver allowed to query it?)",
				zap.String("zone", z.Zone), zap.String("answer", addr.String()))
			continue
		}
		if len(b.codes[i]) == 0 {
			if loopback.Contains(addr) {
				return true
			}
			continue
		}
		if slices.ContainsFunc(b.codes[i], func(p netip.Prefix) bool { return p.Contains(addr) }) {
			return true
		}
	}
	return false
}

// QueryName is the DNS name that asks zone about ip (RFC 5782 section
// 2.1 and 2.4): the octets of an IPv4 address, or the nibbles of an IPv6
// address, in reverse order, then the zone.
func QueryName(ip netip.Addr, zone string) string {
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.", a[3], a[2], a[1], a[0])
	} else {
		a := ip.As16()
		const hex = "0123456789abcdef"
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	return b.String()
}

// Concurrent implements smtpapp.ConcurrentCheck: the check only asks DNS.
func (*DNSBL) Concurrent() {}

// Interface guards
var (
	_ smtpapp.ConcurrentCheck = (*DNSBL)(nil)
	_ caddy.Provisioner       = (*DNSBL)(nil)
	_ smtpapp.RecipientCheck  = (*DNSBL)(nil)
)
