package spf

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server block of the `smtp` global option. Syntax:
//
//	check spf {
//		fail      reject|accept
//		softfail  accept|reject
//		temperror tempfail|accept
//		permerror accept|reject
//		resolvers <ip[:port]>...
//		timeout   <duration>
//	}
func (s *SPF) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		switch opt {
		case "fail", "softfail", "temperror", "permerror":
			if len(args) != 1 {
				return d.ArgErr()
			}
			*map[string]*string{"fail": &s.Fail, "softfail": &s.SoftFail, "temperror": &s.TempError, "permerror": &s.PermError}[opt] = args[0]
		case "resolvers":
			s.Resolvers = append(s.Resolvers, args...)
		case "timeout":
			dur, err := caddy.ParseDuration(args[0])
			if len(args) != 1 || err != nil || dur <= 0 {
				return d.Errf("spf: timeout: want one positive duration, got '%s'", args[0])
			}
			s.Timeout = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized spf option '%s'", opt)
		}
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*SPF)(nil)
