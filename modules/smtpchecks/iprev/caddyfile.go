package iprev

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/cfopts"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server block of the `smtp` global option. Syntax:
//
//	check iprev {
//		fail      accept|reject
//		temperror accept|tempfail
//		resolvers <ip[:port]>...
//		timeout   <duration>
//		cache_ttl <duration>
//	}
func (c *IPRev) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	if d.NextArg() {
		return d.ArgErr()
	}
	return cfopts.Block(d, "iprev", map[string]cfopts.Option{
		"fail":      cfopts.OneOf(&c.Fail, actionAccept, actionReject),
		"temperror": cfopts.OneOf(&c.TempError, actionAccept, actionTempfail),
		"resolvers": cfopts.Opt(1, -1, func(a []string) error { c.Resolvers = append(c.Resolvers, a...); return nil }),
		"timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			c.Timeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"cache_ttl": cfopts.Opt(1, 1, func(a []string) (err error) {
			c.CacheTTL, err = cfopts.PositiveDuration(a[0])
			return err
		}),
	})
}

// Interface guards
var _ caddyfile.Unmarshaler = (*IPRev)(nil)
