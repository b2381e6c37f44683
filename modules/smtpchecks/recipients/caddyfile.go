package recipients

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// route block of the `smtp` global option. Syntax:
//
//	check recipients [<address|@domain>...] {
//		file            <path>
//		reload_interval <duration>
//	}
func (r *Recipients) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	r.Addresses = append(r.Addresses, d.RemainingArgs()...)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "file":
			if r.File != "" {
				return d.Err("recipients: duplicate file")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			r.File = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "reload_interval":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("recipients: reload_interval: want a positive duration, got '%s'", d.Val())
			}
			r.ReloadInterval = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized recipients option '%s'", d.Val())
		}
	}
	if len(r.Addresses) == 0 && r.File == "" {
		return d.Err("recipients: give addresses or a file")
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Recipients)(nil)
