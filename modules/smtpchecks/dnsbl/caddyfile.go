package dnsbl

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server block of the `smtp` global option. Zones on the first line have
// weight 1. Syntax:
//
//	check dnsbl [<zone>...] {
//		zone       <zone> [<weight> [<code|prefix>...]]
//		threshold  <n>
//		resolvers  <ip[:port]>...
//		timeout    <duration>
//		cache_ttl  <duration>
//		cache_size <n>
//	}
func (b *DNSBL) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	for _, z := range d.RemainingArgs() {
		b.Zones = append(b.Zones, Zone{Zone: z})
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		switch opt {
		case "zone":
			if len(args) == 0 {
				return d.ArgErr()
			}
			z := Zone{Zone: args[0]}
			if len(args) > 1 {
				w, err := strconv.Atoi(args[1])
				if err != nil || w == 0 {
					return d.Errf("dnsbl: zone %s: weight must be a non-zero integer, got '%s'", args[0], args[1])
				}
				z.Weight, z.Codes = w, args[2:]
			}
			b.Zones = append(b.Zones, z)
		case "threshold", "cache_size":
			if len(args) != 1 {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n <= 0 {
				return d.Errf("dnsbl: %s: want a positive integer, got '%s'", opt, args[0])
			}
			if opt == "threshold" {
				b.Threshold = n
			} else {
				b.CacheSize = n
			}
		case "resolvers":
			if len(args) == 0 {
				return d.ArgErr()
			}
			b.Resolvers = append(b.Resolvers, args...)
		case "timeout", "cache_ttl":
			if len(args) != 1 {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("dnsbl: %s: want a positive duration, got '%s'", opt, args[0])
			}
			if opt == "timeout" {
				b.Timeout = caddy.Duration(dur)
			} else {
				b.CacheTTL = caddy.Duration(dur)
			}
		default:
			return d.Errf("unrecognized dnsbl option '%s'", opt)
		}
	}
	if len(b.Zones) == 0 {
		return d.Err("dnsbl: give at least one zone")
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*DNSBL)(nil)
