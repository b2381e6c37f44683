package smtpstatus

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("smtp_status", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("smtp_status", httpcaddyfile.Before, "respond")
}

// parseCaddyfile sets up the `smtp_status` HTTP handler directive, which
// serves the status page; it takes no options. Put it behind `basic_auth`:
//
//	status.example.com {
//		basic_auth {
//			admin <bcrypt hash>
//		}
//		smtp_status
//	}
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(Handler)
	err := s.UnmarshalCaddyfile(h.Dispenser)
	return s, err
}

// UnmarshalCaddyfile reads `smtp_status` (no arguments, no block).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("unrecognized smtp_status option '%s'", d.Val())
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
