package dkim

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/cfopts"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server or route block of the `smtp` global option. Syntax:
//
//	check dkim {
//		resolvers      <ip[:port]>...
//		timeout        <duration>
//		max_signatures <n>
//		cache_ttl      <duration>
//	}
func (k *DKIM) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	if d.NextArg() {
		return d.ArgErr()
	}
	return cfopts.Block(d, "dkim", map[string]cfopts.Option{
		"resolvers": cfopts.Opt(1, -1, func(a []string) error { k.Resolvers = append(k.Resolvers, a...); return nil }),
		"timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			k.Timeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"cache_ttl": cfopts.Opt(1, 1, func(a []string) (err error) {
			k.CacheTTL, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"max_signatures": cfopts.Opt(1, 1, func(a []string) (err error) {
			k.MaxSignatures, err = cfopts.PositiveInt(a[0], 100)
			return err
		}),
	})
}

// Interface guards
var _ caddyfile.Unmarshaler = (*DKIM)(nil)
