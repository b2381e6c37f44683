package ldap

import (
	"errors"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the check from Caddyfile tokens, as used in a
// server or route block of the `smtp` global option. Syntax:
//
//	check ldap <url> {
//		base_dn        <dn>
//		filter         <filter with {address} {local} {domain}>
//		scope          sub|one|base
//		bind_dn        <dn>
//		bind_password  <password, e.g. {env.LDAP_PASSWORD}>
//		start_tls
//		ca             <pem file>...
//		server_name    <name>
//		timeout        <duration>
//		positive_ttl   <duration>
//		negative_ttl   <duration>
//		cache_size     <n>
//		pool_size      <n>
//		on_unreachable tempfail|accept
//	}
func (l *LDAP) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the check name
	if !d.NextArg() {
		return d.Err("ldap: want the directory's URL: 'check ldap ldaps://ldap.example.com { ... }'")
	}
	l.URL = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("ldap: duplicate option '%s'", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		switch opt {
		case "start_tls":
			if len(args) != 0 {
				return d.ArgErr()
			}
			l.StartTLS = true
		case "ca":
			if len(args) == 0 {
				return d.ArgErr()
			}
			l.CA = args
		default:
			set, ok := l.stringOptions()[opt]
			if !ok {
				return d.Errf("unrecognized ldap option '%s'", opt)
			}
			if len(args) != 1 {
				return d.ArgErr()
			}
			if err := set(args[0]); err != nil {
				return d.Errf("ldap: %s: %v, got '%s'", opt, err, args[0])
			}
		}
	}
	if l.BaseDN == "" {
		return d.Err("ldap: base_dn is required")
	}
	return nil
}

// stringOptions are the Caddyfile options that take one value, each with
// what sets it.
func (l *LDAP) stringOptions() map[string]func(string) error {
	text := func(dst *string) func(string) error {
		return func(v string) error { *dst = v; return nil }
	}
	oneOf := func(dst *string, want string, allowed ...string) func(string) error {
		return func(v string) error {
			for _, a := range allowed {
				if v == a {
					*dst = v
					return nil
				}
			}
			return errors.New("want " + want)
		}
	}
	duration := func(dst *caddy.Duration) func(string) error {
		return func(v string) error {
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return errors.New("want a positive duration")
			}
			*dst = caddy.Duration(dur)
			return nil
		}
	}
	count := func(dst *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return errors.New("want a positive integer")
			}
			*dst = n
			return nil
		}
	}
	return map[string]func(string) error{
		"base_dn":        text(&l.BaseDN),
		"filter":         text(&l.Filter),
		"bind_dn":        text(&l.BindDN),
		"bind_password":  text(&l.BindPassword),
		"server_name":    text(&l.ServerName),
		"scope":          oneOf(&l.Scope, "sub, one or base", "sub", "one", "base"),
		"on_unreachable": oneOf(&l.OnUnreachable, "tempfail or accept", onUnreachableTempfail, onUnreachableAccept),
		"timeout":        duration(&l.Timeout),
		"positive_ttl":   duration(&l.PositiveTTL),
		"negative_ttl":   duration(&l.NegativeTTL),
		"cache_size":     count(&l.CacheSize),
		"pool_size":      count(&l.PoolSize),
	}
}

// Interface guards
var _ caddyfile.Unmarshaler = (*LDAP)(nil)
