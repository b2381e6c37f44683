package dkimsign

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/cfopts"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server block of the `smtp` global option (last among its checks).
// Syntax:
//
//	check dkim_sign <domain>... {
//		algorithms     rsa|ed25519...
//		rotate_every   <duration>
//		grace          <duration>
//		check_interval <duration>
//		resolvers      <ip[:port]>...
//	}
func (s *DKIMSign) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	s.Domains = append(s.Domains, d.RemainingArgs()...)
	duration := func(field *caddy.Duration) cfopts.Option {
		return cfopts.Opt(1, 1, func(a []string) (err error) {
			*field, err = cfopts.PositiveDuration(a[0])
			return err
		})
	}
	if err := cfopts.Block(d, "dkim_sign", map[string]cfopts.Option{
		"algorithms": cfopts.Opt(1, 2, func(a []string) error {
			for _, alg := range a {
				if algSuffix[alg] == "" {
					return errAlgorithm(alg)
				}
			}
			s.Algorithms = a
			return nil
		}),
		"rotate_every":   duration(&s.RotateEvery),
		"grace":          duration(&s.Grace),
		"check_interval": duration(&s.CheckInterval),
		"resolvers":      cfopts.Opt(1, -1, func(a []string) error { s.Resolvers = append(s.Resolvers, a...); return nil }),
	}); err != nil {
		return err
	}
	if len(s.Domains) == 0 {
		return d.Err("dkim_sign: give the domains to sign for")
	}
	return nil
}

func errAlgorithm(alg string) error { return fmt.Errorf("want rsa or ed25519, got '%s'", alg) }

// Interface guards
var _ caddyfile.Unmarshaler = (*DKIMSign)(nil)
