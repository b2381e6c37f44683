package smtpapp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"
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

	srv *Server
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
		h.TLS = TLSStartTLS
	case TLSStartTLS, TLSImplicit:
	default:
		return fmt.Errorf("smtp handler: tls must be starttls or implicit, not %q", h.TLS)
	}
	appIface, err := ctx.App("smtp")
	if err != nil {
		return fmt.Errorf("smtp handler: %w", err)
	}
	srv := appIface.(*App).Servers[h.Server]
	if srv == nil {
		return fmt.Errorf("smtp handler: the smtp app has no server %q", h.Server)
	}
	h.srv = srv
	return nil
}

// Handle serves the connection as an SMTP session.
func (h *L4Handler) Handle(cx *layer4.Connection, _ layer4.Handler) error {
	return h.srv.serveConn(cx.Context, cx, h.TLS)
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
		h.TLS = TLSImplicit
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Err("the smtp handler takes no block")
	}
	return nil
}

// serveConn serves one connection that arrived through layer4 (or any
// other way than our own listeners) and returns when it is closed.
func (s *Server) serveConn(ctx context.Context, c net.Conn, mode string) error {
	if l4c, ok := c.(*layer4.Connection); ok {
		if _, isTLS := l4c.Conn.(*tls.Conn); isTLS {
			c.Close()
			return errors.New("smtp handler: the connection was already TLS-terminated by layer4; use 'smtp <server> implicit_tls' instead of the tls handler")
		}
	}
	l := s.l4Listener(mode)
	tc := l.handle(c)
	if tc == nil {
		return nil // refused by a limit; already answered
	}
	select {
	case <-tc.closed:
	case <-ctx.Done():
		tc.Close()
	}
	return nil
}

// l4Listener returns the go-smtp server that serves connections of a TLS
// mode that came from layer4, creating it on first use.
func (s *Server) l4Listener(mode string) *listener {
	s.l4mu.Lock()
	defer s.l4mu.Unlock()
	if l := s.l4[mode]; l != nil {
		return l
	}
	cfg := &Listener{Address: "layer4", TLS: mode}
	l := &listener{srv: s, cfg: cfg, smtp: s.newSMTPServer(cfg), feed: newChanListener(l4Addr{})}
	go func() { _ = l.smtp.Serve(l.feed) }()
	s.l4[mode] = l
	s.logger.Debug("serving connections from layer4", zap.String("tls", mode))
	return l
}

// l4Addr is the local address reported for layer4 connections.
type l4Addr struct{}

func (l4Addr) Network() string { return "layer4" }
func (l4Addr) String() string  { return "layer4" }

// Interface guards
var (
	_ caddy.Provisioner     = (*L4Handler)(nil)
	_ layer4.NextHandler    = (*L4Handler)(nil)
	_ caddyfile.Unmarshaler = (*L4Handler)(nil)
)
