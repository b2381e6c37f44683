package mx

import (
	"fmt"
	"strings"

	"github.com/caddy-smtp/caddy-smtp/modules/smtptargets/smtpclient"
	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/cfopts"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the mx target from Caddyfile tokens, as used
// in a route or the outbound block of the `smtp` global option. Syntax:
//
//	mx {
//		resolvers       <ip[:port]>...
//		tls             none|opportunistic|required|verify|mta-sts|dane
//		domain_tls      <domain> <level>      # repeatable
//		mta_sts         on|off
//		dane            on|off
//		ca_file         <pem file>
//		connect_timeout <duration>
//		timeout         <duration>
//		max_addresses   <n>
//		source_addresses <ipv4> [<ipv6>]
//		port            <port>
//	}
//
// The block is optional: `mx` alone delivers with the defaults.
func (m *MX) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume target name
	if d.NextArg() {
		return d.ArgErr()
	}
	return cfopts.Block(d, "mx", map[string]cfopts.Option{
		"resolvers": cfopts.Opt(1, -1, func(a []string) error {
			// Given servers, resolver.New only checks their addresses.
			if _, err := resolver.New(a, 0); err != nil {
				return err
			}
			m.Resolvers = a
			return nil
		}),
		"tls": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.TLS, err = cfopts.TLSLevel(a[0])
			return err
		}),
		"connect_timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.ConnectTimeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.Timeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"source_addresses": cfopts.Opt(1, 2, func(a []string) error {
			if _, err := smtpclient.ParseSources(a); err != nil {
				return err
			}
			m.SourceAddresses = a
			return nil
		}),
		"max_addresses": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.MaxAddresses, err = cfopts.PositiveInt(a[0], 0)
			return err
		}),
		"port": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.Port, err = cfopts.PositiveInt(a[0], 65535)
			return err
		}),
		"domain_tls": cfopts.Opt(2, 2, func(a []string) error {
			lvl, err := cfopts.TLSLevel(a[1])
			if err != nil {
				return err
			}
			domain := strings.ToLower(strings.TrimSuffix(a[0], "."))
			if _, dup := m.DomainTLS[domain]; dup {
				return fmt.Errorf("domain '%s' given twice", domain)
			}
			if m.DomainTLS == nil {
				m.DomainTLS = map[string]string{}
			}
			m.DomainTLS[domain] = lvl
			return nil
		}),
		"mta_sts": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.MTASTS, err = cfopts.OnOff(a[0])
			return err
		}),
		"dane": cfopts.Opt(1, 1, func(a []string) (err error) {
			m.DANE, err = cfopts.OnOff(a[0])
			return err
		}),
		"ca_file": cfopts.Opt(1, 1, func(a []string) error {
			m.CAFile = a[0]
			return nil
		}),
	}, "domain_tls")
}

// Interface guards
var _ caddyfile.Unmarshaler = (*MX)(nil)
