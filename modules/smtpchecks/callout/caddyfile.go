package callout

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// route block of the `smtp` global option. Syntax:
//
//	check callout {
//		positive_ttl   <duration>
//		negative_ttl   <duration>
//		cache_size     <n>
//		timeout        <duration>
//		on_unreachable tempfail|accept
//	}
func (c *Callout) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		v := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "positive_ttl", "negative_ttl", "timeout":
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("callout: %s: want a positive duration, got '%s'", opt, v)
			}
			*map[string]*caddy.Duration{"positive_ttl": &c.PositiveTTL, "negative_ttl": &c.NegativeTTL, "timeout": &c.Timeout}[opt] = caddy.Duration(dur)
		case "cache_size":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("callout: cache_size: want a positive integer, got '%s'", v)
			}
			c.CacheSize = n
		case "on_unreachable":
			if v != onUnreachableTempfail && v != onUnreachableAccept {
				return d.Errf("callout: on_unreachable: want tempfail or accept, got '%s'", v)
			}
			c.OnUnreachable = v
		default:
			return d.Errf("unrecognized callout option '%s'", opt)
		}
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Callout)(nil)
