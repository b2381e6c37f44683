package lists

import (
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server or route block of the `smtp` global option. The entries of the
// lists are not in the Caddyfile: they live in Caddy storage and are
// changed with `caddy smtp lists` or the admin API. Syntax:
//
//	check lists {
//		reload_interval <duration>
//		order           <kind>...
//	}
func (c *Check) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		switch opt {
		case "reload_interval":
			if len(args) != 1 {
				return d.ArgErr()
			}
			if c.ReloadInterval != 0 {
				return d.Errf("lists: %s given twice", opt)
			}
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("lists: %s: want a positive duration, got '%s'", opt, args[0])
			}
			c.ReloadInterval = caddy.Duration(dur)
		case "order":
			if len(args) == 0 {
				return d.ArgErr()
			}
			if c.Order != nil {
				return d.Errf("lists: %s given twice", opt)
			}
			for _, k := range args {
				if !slices.Contains(Kinds, k) {
					return d.Errf("lists: order: unknown kind '%s'", k)
				}
			}
			c.Order = args
		default:
			return d.Errf("unrecognized lists option '%s'", opt)
		}
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Check)(nil)
