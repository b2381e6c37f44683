package smtpapp

import (
	"context"
	"fmt"
	"net"

	"go.uber.org/zap"
)

// ServeConn serves one connection that arrived another way than through
// the server's own listeners (from caddy-l4's `layer4.handlers.smtp`, for
// example) as an SMTP session with the TLS mode `starttls` or `implicit`,
// under the server's limits, and returns when the connection is closed or
// ctx ends. c's RemoteAddr is the client address the session sees.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, mode string) error {
	switch mode {
	case TLSStartTLS, TLSImplicit:
	default:
		c.Close()
		return fmt.Errorf("tls mode must be %s or %s, not %q", TLSStartTLS, TLSImplicit, mode)
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
// mode that came through ServeConn, creating it on first use.
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

// l4Addr is the local address reported for connections from ServeConn.
type l4Addr struct{}

func (l4Addr) Network() string { return "layer4" }
func (l4Addr) String() string  { return "layer4" }
