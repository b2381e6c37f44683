// Package l4smtp is the `layer4.handlers.smtp` caddy-l4 handler: SMTP
// sessions of the smtp app's servers on connections that caddy-l4 routes.
// It is the only package that imports caddy-l4, so a build without it
// links no layer4 code.
package l4smtp

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
)

func init() {
	caddy.RegisterModule(L4Handler{})
}

// L4Handler serves connections routed by caddy-l4 with one of the smtp
// app's servers, so SMTP can share a port with other protocols, sit behind
// a load balancer that speaks the PROXY protocol (put
// `layer4.handlers.proxy_protocol` before it: the session, the Received
// header, the limits and the logs then see the real client address), or
// be matched by address or SNI. It ends the handler chain and returns when
// the SMTP session is over.
type L4Handler struct {
	// Server is the name of the smtp app server that serves the
	// connections; it needs no listen addresses of its own.
	Server string `json:"server,omitempty"`

	// TLS is `starttls` (default: plaintext greeting, STARTTLS offered) or
	// `implicit` (this handler runs the TLS handshake with the server's
	// certificate, as on port 465). Do not terminate TLS with layer4's own
	// `tls` handler in front: the SMTP session would not know it is
	// encrypted.
	TLS string `json:"tls,omitempty"`

	srv *smtpapp.Server
}

// CaddyModule returns the Caddy module information.
func (L4Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.smtp",
		New: func() caddy.Module { return new(L4Handler) },
	}
}

// Provision finds the server in the smtp app.
func (h *L4Handler) Provision(ctx caddy.Context) error {
	switch h.TLS {
	case "":
		h.TLS = smtpapp.TLSStartTLS
	case smtpapp.TLSStartTLS, smtpapp.TLSImplicit:
	default:
		return fmt.Errorf("smtp handler: tls must be starttls or implicit, not %q", h.TLS)
	}
	appIface, err := ctx.App("smtp")
	if err != nil {
		return fmt.Errorf("smtp handler: %w", err)
	}
	srv := appIface.(*smtpapp.App).Servers[h.Server]
	if srv == nil {
		return fmt.Errorf("smtp handler: the smtp app has no server %q", h.Server)
	}
	h.srv = srv
	return nil
}

// Handle serves the connection as an SMTP session.
func (h *L4Handler) Handle(cx *layer4.Connection, _ layer4.Handler) error {
	if _, isTLS := cx.Conn.(*tls.Conn); isTLS {
		cx.Close()
		return errors.New("smtp handler: the connection was already TLS-terminated by layer4; use 'smtp <server> implicit_tls' instead of the tls handler")
	}
	return h.srv.ServeConn(cx.Context, cx, h.TLS)
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	smtp <server> [implicit_tls]
func (h *L4Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // handler name
	if !d.NextArg() {
		return d.ArgErr()
	}
	h.Server = d.Val()
	if d.NextArg() {
		if d.Val() != "implicit_tls" {
			return d.Errf("unknown smtp handler option '%s' (want implicit_tls)", d.Val())
		}
		h.TLS = smtpapp.TLSImplicit
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Err("the smtp handler takes no block")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*L4Handler)(nil)
	_ layer4.NextHandler    = (*L4Handler)(nil)
	_ caddyfile.Unmarshaler = (*L4Handler)(nil)
)
