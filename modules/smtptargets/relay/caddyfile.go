package relay

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/cfopts"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// UnmarshalCaddyfile sets up the relay target from Caddyfile tokens, as
// used in a route or the outbound block of the `smtp` global option.
// Syntax:
//
//	relay <host[:port]>... {
//		tls             none|opportunistic|required|verify | implicit [verify|required]
//		ca_file         <pem file>
//		trust_pool      <ca pool source> [<args>...]
//		auth            <username> <password>
//		connect_timeout <duration>
//		timeout         <duration>
//	}
//
// The block is optional. Hosts are tried in order; the port defaults to
// 25 (465 with `tls implicit`: TLS from the first byte). auth needs `tls
// verify` (or implicit verify). Username and password may be placeholders
// such as `{env.RELAY_PASSWORD}`, which are replaced when the config is
// loaded.
func (r *Relay) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume target name
	r.Hosts = d.RemainingArgs()
	if len(r.Hosts) == 0 {
		return d.Err("relay needs at least one host, e.g. 'relay smarthost.example.com:587'")
	}
	for _, h := range r.Hosts {
		if err := checkRelayHost(h); err != nil {
			return d.Errf("relay host '%s': %w", h, err)
		}
	}
	var authAt caddyfile.Dispenser // the auth line, for the error below
	err := cfopts.Block(d, "relay", map[string]cfopts.Option{
		"tls": cfopts.Opt(1, 2, func(a []string) (err error) {
			if a[0] == "implicit" {
				r.ImplicitTLS, r.TLS = true, string(tlsupgrade.LevelVerify)
				if len(a) == 2 {
					if a[1] != string(tlsupgrade.LevelRequired) && a[1] != string(tlsupgrade.LevelVerify) {
						return fmt.Errorf("implicit TLS is verify (the default) or required, not '%s'", a[1])
					}
					r.TLS = a[1]
				}
				return nil
			}
			if len(a) == 2 {
				return fmt.Errorf("one level, or implicit [verify|required]; got '%s %s'", a[0], a[1])
			}
			r.TLS, err = cfopts.TLSLevel(a[0])
			return err
		}),
		"auth": cfopts.Opt(2, 2, func(a []string) error {
			if a[0] == "" || a[1] == "" {
				return errors.New("empty username or password")
			}
			r.Auth = &RelayAuth{Username: a[0], Password: a[1]}
			authAt = *d
			return nil
		}),
		"connect_timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			r.ConnectTimeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"timeout": cfopts.Opt(1, 1, func(a []string) (err error) {
			r.Timeout, err = cfopts.PositiveDuration(a[0])
			return err
		}),
		"ca_file": cfopts.Opt(1, 1, func(a []string) error {
			r.CAFile = a[0]
			return nil
		}),
		"trust_pool": cfopts.Opt(1, -1, func(a []string) error {
			raw, err := trustPool(d.File(), d.Line(), a)
			r.TrustPool = raw
			return err
		}),
	})
	if err != nil {
		return err
	}
	if err := checkAuthTLS(r.Auth != nil, r.TLS); err != nil {
		return authAt.WrapErr(err)
	}
	return nil
}

// checkRelayHost checks a relay host given as `host`, `host:port`, an IP
// address or `[ip]:port`: the forms Relay.Provision understands.
func checkRelayHost(h string) error {
	_, err := parseRelayHost(h, "25")
	return err
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Relay)(nil)

// trustPool builds the JSON of a tls.ca_pool.source module from its
// one-line Caddyfile form, e.g. `pki_root local` or `file ca.pem`, as
// Caddy's own trust_pool options do.
func trustPool(file string, line int, args []string) (json.RawMessage, error) {
	tokens := make([]caddyfile.Token, len(args))
	for i, a := range args {
		tokens[i] = caddyfile.Token{File: file, Line: line, Text: a}
	}
	d := caddyfile.NewDispenser(tokens)
	d.Next() // at the module name, where UnmarshalModule starts
	mod, err := caddyfile.UnmarshalModule(d, "tls.ca_pool.source."+args[0])
	if err != nil {
		return nil, err
	}
	return caddyconfig.JSONModuleObject(mod, "provider", args[0], nil), nil
}
