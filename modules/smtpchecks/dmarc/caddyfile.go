package dmarc

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/cfopts"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server or route block of the `smtp` global option (after `check dkim`).
// Syntax:
//
//	check dmarc {
//		reject        reject|quarantine|tag
//		quarantine    quarantine|reject|tag
//		honor_pct     on|off
//		multiple_from reject|accept
//		temperror     accept|tempfail
//		resolvers     <ip[:port]>...
//		timeout       <duration>
//		cache_ttl     <duration>
//	}
func (m *DMARC) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	if d.NextArg() {
		return d.ArgErr()
	}
	return cfopts.Block(d, "dmarc", map[string]cfopts.Option{
		"reject":        cfopts.OneOf(&m.Reject, actionReject, actionQuarantine, actionTag),
		"quarantine":    cfopts.OneOf(&m.Quarantine, actionQuarantine, actionReject, actionTag),
		"multiple_from": cfopts.OneOf(&m.MultipleFrom, actionReject, actionAccept),
		"temperror":     cfopts.OneOf(&m.TempError, actionAccept, actionTempfail),
		"honor_pct": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.HonorPct, err = cfopts.OnOff(a[0])
			return err
		}),
		"resolvers": cfopts.Opt(1, -1, func(a []string) error { m.Resolvers = append(m.Resolvers, a...); return nil }),
		"timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.Timeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"cache_ttl": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.CacheTTL, err = cfopts.PositiveDuration(a[0])
			return err
		}),
	})
}

// Interface guards
var _ caddyfile.Unmarshaler = (*DMARC)(nil)
