package smtpapp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

// Sockets are shared across config reloads. Caddy starts a new config
// before it stops the old one; Caddy's own listeners re-bind the address
// with SO_REUSEPORT, so connections still queued on the old socket when it
// closes are reset, and an address with port 0 gets a new port. Instead, one
// accept loop per address lives as long as any config uses the address and
// hands each connection to the newest server registered for it.
var sockets = caddy.NewUsagePool()

// sharedSocket is a bound socket and its accept loop.
type sharedSocket struct {
	ln     net.Listener
	key    string
	logger *zap.Logger

	mu       sync.Mutex
	handlers []*listener // the last one registered gets new connections
}

// acquireSocket returns the shared socket for the address, binding it if no
// running config uses it yet. Every call must be paired with releaseSocket.
func acquireSocket(ctx caddy.Context, na caddy.NetworkAddress, offset uint) (*sharedSocket, error) {
	key := na.Network + "/" + na.JoinHostPort(offset)
	val, _, err := sockets.LoadOrNew(key, func() (caddy.Destructor, error) {
		ln, err := listenOwned(ctx, na, offset)
		if err != nil {
			return nil, err
		}
		nl, ok := ln.(net.Listener)
		if !ok {
			if c, ok := ln.(interface{ Close() error }); ok {
				c.Close()
			}
			return nil, fmt.Errorf("not a stream listener (%T)", ln)
		}
		ss := &sharedSocket{ln: nl, key: key, logger: caddy.Log().Named("smtp.listener")}
		go ss.acceptLoop()
		return ss, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*sharedSocket), nil
}

// listenOwned binds the address. A TCP socket is bound without
// SO_REUSEPORT (which Caddy's own listeners set), so that a second process
// with a config for the same address fails to start instead of sharing
// the port, where the kernel would split the connections between two
// gateways and their spools. Within this process, reloads share the socket
// through the sockets pool and never bind twice.
func listenOwned(ctx caddy.Context, na caddy.NetworkAddress, offset uint) (any, error) {
	if !na.IsUnixNetwork() && !na.IsFdNetwork() {
		addr := na.JoinHostPort(offset)
		ln, err := (&net.ListenConfig{}).Listen(ctx, na.Network, addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%s is already in use, by another process (is another gateway running with a config for it?): %w", addr, err)
		}
		return ln, err
	}
	return na.Listen(ctx, offset, net.ListenConfig{})
}

// releaseSocket drops one use of the socket; the last use closes it.
func releaseSocket(ss *sharedSocket) {
	_, _ = sockets.Delete(ss.key)
}

// Destruct closes the socket when no config uses it any more.
func (ss *sharedSocket) Destruct() error { return ss.ln.Close() }

func (ss *sharedSocket) register(l *listener) {
	ss.mu.Lock()
	ss.handlers = append(ss.handlers, l)
	ss.mu.Unlock()
}

func (ss *sharedSocket) unregister(l *listener) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for i, h := range ss.handlers {
		if h == l {
			ss.handlers = append(ss.handlers[:i], ss.handlers[i+1:]...)
			return
		}
	}
}

func (ss *sharedSocket) current() *listener {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.handlers) == 0 {
		return nil
	}
	return ss.handlers[len(ss.handlers)-1]
}

func (ss *sharedSocket) acceptLoop() {
	var delay time.Duration
	for {
		c, err := ss.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				ss.logger.Error("accept failed; retrying", zap.String("address", ss.ln.Addr().String()),
					zap.Error(err), zap.Duration("retry_in", delay))
				t := time.NewTimer(delay)
				<-t.C
				continue
			}
			ss.logger.Error("accept failed; listener stopped", zap.String("address", ss.ln.Addr().String()), zap.Error(err))
			return
		}
		delay = 0
		if l := ss.current(); l != nil {
			l.handle(c)
		} else {
			c.Close()
		}
	}
}

// isTemporaryAccept reports errors after which accepting may work again
// (file descriptor exhaustion, aborted connections).
func isTemporaryAccept(err error) bool {
	s := err.Error()
	return strings.Contains(s, "too many open files") || strings.Contains(s, "connection reset") ||
		strings.Contains(s, "connection aborted") || strings.Contains(s, "cannot allocate memory")
}

// listener is one listening address of a running server: it registers with
// the shared socket, applies the server's connection limit, tracks
// connections (so a stop can close them after the grace period) and feeds
// them to a go-smtp server through a channel-backed net.Listener.
type listener struct {
	srv  *Server
	cfg  *Listener
	sock *sharedSocket
	smtp *smtp.Server
	feed *chanListener
}

func (s *Server) newListener(cfg *Listener, sock *sharedSocket) *listener {
	return &listener{
		srv:  s,
		cfg:  cfg,
		sock: sock,
		smtp: s.newSMTPServer(cfg),
		feed: newChanListener(sock.ln.Addr()),
	}
}

func (l *listener) serve() {
	go func() {
		// Serve returns when the feed is closed by Shutdown or Close.
		_ = l.smtp.Serve(l.feed)
	}()
	l.sock.register(l)
}

// handle applies the connection limits, tracks the connection and hands
// it to go-smtp. It returns the tracked connection, or nil if the
// connection was refused.
func (l *listener) handle(c net.Conn) *trackedConn {
	ip := remoteIP(c.RemoteAddr())
	if reason, label := l.srv.admit(ip); reason != "" {
		l.srv.logger.Warn("connection refused", zap.String("remote_ip", ip), zap.String("reason", reason))
		l.srv.app.metrics.connectionsRefused.WithLabelValues(l.srv.name, label).Inc()
		go rejectBusy(c, l.srv.Hostname, reason, l.cfg.TLS == TLSImplicit)
		return nil
	}
	l.srv.app.metrics.connections.WithLabelValues(l.srv.name, l.cfg.TLS).Inc()
	tc := l.srv.track(c, ip)
	if l.cfg.TLS != TLSImplicit {
		tc.plain = new(plainFilter)
		if l.srv.GreetingDelay > 0 {
			go l.greetLater(tc)
			return tc
		}
		if !l.feed.deliver(tc) {
			tc.Close()
		}
		return tc
	}
	// go-smtp recognises TLS by the *tls.Conn type. The handshake runs
	// here, bounded by tls_handshake_timeout, off the accept loop.
	go func() {
		conn := tls.Server(tc, l.srv.tlsConfig)
		ctx, cancel := context.WithTimeout(l.srv.app.ctx, time.Duration(l.srv.TLSHandshakeTimeout))
		err := conn.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.srv.handshakeFailed(tc, TLSImplicit, err)
			conn.Close()
			return
		}
		if !l.feed.deliver(conn) {
			conn.Close()
		}
	}()
	return tc
}

// greetLater waits greeting_delay before go-smtp greets the client, and
// refuses a client that sends anything in that time.
func (l *listener) greetLater(tc *trackedConn) {
	delay := time.Duration(l.srv.GreetingDelay)
	_ = tc.Conn.SetReadDeadline(time.Now().Add(delay))
	var b [1]byte
	n, err := tc.Conn.Read(b[:])
	_ = tc.Conn.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case n > 0:
		l.srv.logger.Warn("client talked before the greeting; refused", zap.String("remote_ip", tc.ip),
			zap.Duration("greeting_delay", delay))
		l.srv.app.metrics.connectionsRefused.WithLabelValues(l.srv.name, "early_talker").Inc()
		_ = tc.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = fmt.Fprintf(tc.Conn, "554 5.5.1 %s Protocol error: you talked before the greeting\r\n", l.srv.Hostname)
		// Closing with unread input would reset the connection, and the
		// reset can overtake the reply: end our side, then read what the
		// client sent (bounded) before closing.
		if cw, ok := tc.Conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = tc.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.Copy(io.Discard, io.LimitReader(tc.Conn, 64<<10))
		tc.closeFor("early_talker")
		return
	case errors.As(err, &ne) && ne.Timeout():
		if !l.feed.deliver(tc) {
			tc.Close()
		}
	default:
		tc.Close() // the client went away
	}
}

// admit applies the connection limits of the server to a new connection
// from ip and reserves a slot; it returns why the connection is refused
// (and a metrics label for it), or "" when it is admitted.
func (s *Server) admit(ip string) (reason, label string) {
	ip = s.limitKey(ip)
	if !s.app.limits.allow("conn-rate:"+s.name+":"+ip, s.ConnectionRatePerIP, time.Minute) {
		return "too many connections from your address per minute", "connection_rate_per_ip"
	}
	select {
	case s.slots <- struct{}{}:
	default:
		return "too many connections", "max_connections"
	}
	s.perIPMu.Lock()
	defer s.perIPMu.Unlock()
	if s.MaxConnectionsPerIP >= 0 && s.perIP[ip] >= s.MaxConnectionsPerIP {
		<-s.slots
		return "too many connections from your address", "max_connections_per_ip"
	}
	s.perIP[ip]++
	return "", ""
}

// rejectBusy tells a client why it is refused and closes the connection.
// On an implicit TLS listener nothing can be said before the handshake, so
// the connection is only closed.
func rejectBusy(c net.Conn, hostname, reason string, implicitTLS bool) {
	defer c.Close()
	if implicitTLS {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = fmt.Fprintf(c, "421 4.7.0 %s %s, try again later\r\n", hostname, reason)
}

// track registers an admitted connection with the server. Its lifetime is
// bounded by max_session_duration.
func (s *Server) track(c net.Conn, ip string) *trackedConn {
	tc := &trackedConn{Conn: c, srv: s, ip: ip, closed: make(chan struct{}), start: time.Now()}
	s.connsMu.Lock()
	s.conns[tc] = struct{}{}
	s.connsMu.Unlock()
	tc.limit = time.AfterFunc(time.Duration(s.MaxSessionDuration), func() {
		s.logger.Warn("session time limit reached; closing", zap.String("remote_ip", ip),
			zap.Duration("max_session_duration", time.Duration(s.MaxSessionDuration)))
		tc.closeFor("max_session_duration")
	})
	return tc
}

// trackedConn is an admitted connection: counted against the server's
// limits until it is closed, with the state its SMTP sessions share.
type trackedConn struct {
	net.Conn
	srv    *Server
	ip     string
	state  connState
	limit  *time.Timer
	once   sync.Once
	closed chan struct{}
	start  time.Time
	plain  *plainFilter // before TLS; nil on an implicit TLS listener
}

// closeFor closes the connection and records why.
func (c *trackedConn) closeFor(reason string) {
	c.state.note(func(cs *connState) {
		if cs.reason == "" {
			cs.reason = reason
		}
	})
	c.Close()
}

// Read reads what the client sent, through the plaintext filter before TLS.
// Once the filter passes everything through, reads skip it, so that an idle
// TLS connection's goroutine has one frame less on its stack.
func (c *trackedConn) Read(p []byte) (int, error) {
	if c.plain == nil || c.plain.raw.Load() {
		return c.Conn.Read(p)
	}
	return c.plain.read(c.Conn, p)
}

// Write writes a reply, through the plaintext filter before TLS, and
// closes the connection after the reply that carries a 421, when a session
// asked for that.
func (c *trackedConn) Write(p []byte) (int, error) {
	out := p
	if c.plain != nil {
		var held bool
		out, held = c.plain.write(p)
		if sawHandshakeError(p) {
			c.srv.handshakeFailed(c, TLSStartTLS, nil)
		}
		if held {
			return len(p), nil // a line of a reply that goes out with its last line
		}
	}
	n, err := c.Conn.Write(out)
	if n == len(out) {
		n = len(p)
	} else {
		n = min(n, len(p))
	}
	if c.state.closeAfterReply.Load() {
		c.closeFor("limit")
	}
	return n, err
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.limit.Stop()
		c.srv.connsMu.Lock()
		delete(c.srv.conns, c)
		c.srv.connsMu.Unlock()
		c.srv.perIPMu.Lock()
		key := c.srv.limitKey(c.ip)
		if c.srv.perIP[key]--; c.srv.perIP[key] <= 0 {
			delete(c.srv.perIP, key)
		}
		c.srv.perIPMu.Unlock()
		<-c.srv.slots
		close(c.closed)
		c.logEnd()
	})
	return err
}

// logEnd writes the one line that sums up a connection.
func (c *trackedConn) logEnd() {
	cs := &c.state
	cs.mu.Lock()
	defer cs.mu.Unlock()
	reason := cs.reason
	if reason == "" {
		reason = "closed" // QUIT, the client went away, or an idle timeout
	}
	fields := []zap.Field{
		zap.String("remote_ip", c.ip),
		zap.String("helo", cs.helo),
		zap.Int("messages", cs.accepted),
		zap.Int64("bytes", cs.bytes),
		zap.Int32("rejected_commands", cs.badCommands.Load()),
		zap.Duration("duration", time.Since(c.start)),
		zap.String("close_reason", reason),
	}
	if cs.tlsVersion != "" {
		fields = append(fields, zap.String("tls_version", cs.tlsVersion), zap.String("tls_cipher", cs.tlsCipher))
	}
	if cs.authUser != "" {
		fields = append(fields, zap.String("auth_user", cs.authUser))
	}
	c.srv.logger.Info("connection closed", fields...)
}

// trackedOf finds our tracked connection under what go-smtp holds (the
// connection itself, or a TLS connection over it).
func trackedOf(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

// chanListener is a net.Listener whose connections come from a channel.
// go-smtp has no way to serve a single connection, so this is how accepted
// (and, later, caddy-l4 routed) connections reach it.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// deliver hands a connection to the server; false if the listener is closed.
func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// remoteIP returns the IP of an address without the port.
func remoteIP(a net.Addr) string {
	if a == nil {
		return ""
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
