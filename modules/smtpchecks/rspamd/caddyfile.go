package rspamd

import (
	"fmt"
	"math"
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/cfopts"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server or route block of the `smtp` global option. Syntax:
//
//	check rspamd [<url>] {
//		timeout       <duration>
//		fail_open     on|off
//		password      <secret>
//		quarantine_at <score>
//		add_header    tag|quarantine
//		greylist      tempfail|accept
//	}
func (r *Rspamd) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	if d.NextArg() {
		r.URL = d.Val()
		if err := checkURL(r.URL); err != nil {
			return d.Errf("rspamd: %v", err)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return cfopts.Block(d, "rspamd", map[string]cfopts.Option{
		"timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			r.Timeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"fail_open": cfopts.Opt(1, 1, func(a []string) (err error) {
			r.FailOpen, err = cfopts.OnOff(a[0])
			return err
		}),
		"password": cfopts.Opt(1, 1, func(a []string) error { r.Password = a[0]; return nil }),
		"quarantine_at": cfopts.Opt(1, 1, func(a []string) error {
			score, err := strconv.ParseFloat(a[0], 64)
			if err != nil || math.IsNaN(score) || math.IsInf(score, 0) {
				return fmt.Errorf("want a score such as 10 or 7.5, got '%s'", a[0])
			}
			r.QuarantineAt = &score
			return nil
		}),
		"add_header": cfopts.OneOf(&r.AddHeader, actionTag, actionQuarantine),
		"greylist":   cfopts.OneOf(&r.Greylist, actionTempfail, actionAccept),
	})
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Rspamd)(nil)
