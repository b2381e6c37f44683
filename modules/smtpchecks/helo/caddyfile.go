package helo

import "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server block of the `smtp` global option. Syntax:
//
//	check helo [allow_unqualified]
func (h *HELO) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	for d.NextArg() {
		if d.Val() != "allow_unqualified" {
			return d.Errf("helo: unknown option '%s' (want allow_unqualified)", d.Val())
		}
		h.AllowUnqualified = true
	}
	if d.NextBlock(0) {
		return d.Err("helo takes no block")
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*HELO)(nil)
