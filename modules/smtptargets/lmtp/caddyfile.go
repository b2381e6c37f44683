package lmtp

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/cfopts"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// UnmarshalCaddyfile sets up the lmtp target from Caddyfile tokens, as used
// in a route or the outbound block of the `smtp` global option. Syntax:
//
//	lmtp unix/<socket path>|<host:port> {
//		tls             off|none|opportunistic|required|verify
//		ca_file         <pem file>
//		connect_timeout <duration>
//		timeout         <duration>
//	}
//
// For example `lmtp unix//run/dovecot/lmtp` or `lmtp 127.0.0.1:24`. The
// block is optional; tls applies to TCP only (off is the same as none).
func (l *LMTP) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume target name
	if !d.NextArg() {
		return d.Err("lmtp needs an address, e.g. 'lmtp unix//run/dovecot/lmtp' or 'lmtp 127.0.0.1:24'")
	}
	l.Address = d.Val()
	network, _, _, err := parseAddress(l.Address)
	if err != nil {
		return d.Errf("lmtp address '%s': %w", l.Address, err)
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return cfopts.Block(d, "lmtp", map[string]cfopts.Option{
		"tls": cfopts.Opt(1, 1, func(a []string) (err error) {
			if a[0] == "off" {
				a[0] = string(tlsupgrade.LevelNone)
			}
			if l.TLS, err = cfopts.TLSLevel(a[0]); err != nil {
				return err
			}
			return checkTLS(network, l.TLS)
		}),
		"ca_file": cfopts.Opt(1, 1, func(a []string) error {
			l.CAFile = a[0]
			return nil
		}),
		"connect_timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			l.ConnectTimeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			l.Timeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
	})
}

// Interface guards
var _ caddyfile.Unmarshaler = (*LMTP)(nil)
