package milter

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/cfopts"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server or route block of the `smtp` global option. The address is
// `host:port` or `unix//path`. Syntax:
//
//	check milter <address> {
//		timeout        <duration>
//		default_action accept|tempfail|reject
//	}
func (m *Milter) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	if !d.NextArg() {
		return d.ArgErr()
	}
	m.Address = d.Val()
	if _, _, err := parseAddress(m.Address); err != nil {
		return d.Errf("milter: address '%s': %v", m.Address, err)
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return cfopts.Block(d, "milter", map[string]cfopts.Option{
		"timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.Timeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"default_action": cfopts.OneOf(&m.DefaultAction, "accept", "tempfail", "reject"),
	})
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Milter)(nil)
