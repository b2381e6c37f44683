package smtpquarantine

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("smtp_quarantine", parseCaddyfile)
	// A terminal handler, like respond and file_server: after the
	// authentication handlers (basic_auth, forward_auth) of the site.
	httpcaddyfile.RegisterDirectiveOrder("smtp_quarantine", httpcaddyfile.Before, "file_server")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	smtp_quarantine {
//		user      <placeholder>
//		admins    <user>...
//		users {
//			<user> <address|@domain>...
//		}
//		page_size <n>
//		digest {
//			every         <duration>
//			base_url      <url>
//			from          <address>
//			link_lifetime <duration>
//			domains       <domain>...
//		}
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] && opt != "admins" {
			return d.Errf("smtp_quarantine: duplicate option '%s'", opt)
		}
		seen[opt] = true
		switch opt {
		case "user":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.User = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "admins":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			h.Admins = append(h.Admins, args...)
		case "users":
			if d.NextArg() {
				return d.ArgErr()
			}
			if h.Users == nil {
				h.Users = make(map[string][]string)
			}
			for n := d.Nesting(); d.NextBlock(n); {
				user := d.Val()
				addrs := d.RemainingArgs()
				if len(addrs) == 0 {
					return d.Errf("smtp_quarantine: users: %q needs at least one address or @domain", user)
				}
				h.Users[user] = append(h.Users[user], addrs...)
			}
		case "page_size":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil {
				return d.Errf("smtp_quarantine: page_size %q: not a number", d.Val())
			}
			h.PageSize = n
			if d.NextArg() {
				return d.ArgErr()
			}
		case "digest":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Digest = new(Digest)
			if err := h.Digest.unmarshalCaddyfile(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized smtp_quarantine option '%s'", opt)
		}
	}
	return nil
}

// unmarshalCaddyfile reads the digest block.
func (dg *Digest) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("smtp_quarantine: digest: duplicate option '%s'", opt)
		}
		seen[opt] = true
		if opt == "domains" {
			dg.Domains = d.RemainingArgs()
			if len(dg.Domains) == 0 {
				return d.ArgErr()
			}
			continue
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "base_url":
			dg.BaseURL = val
		case "from":
			dg.From = val
		case "every", "link_lifetime":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("smtp_quarantine: digest: %s %q: %v", opt, val, err)
			}
			if opt == "every" {
				dg.Every = caddy.Duration(dur)
			} else {
				dg.LinkLifetime = caddy.Duration(dur)
			}
		default:
			return d.Errf("unrecognized smtp_quarantine digest option '%s'", opt)
		}
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
