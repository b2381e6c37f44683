package ldap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
)

// pool keeps a few bound connections to the directory for reuse. A
// connection that fails is closed and replaced by a new one at the next
// lookup; at most cap(slots) are open at once.
type pool struct {
	url      *url.URL
	tls      *tls.Config // nil: no TLS
	startTLS bool
	bindDN   string
	password string
	timeout  time.Duration

	slots chan struct{}     // one per connection in use (or being opened)
	idle  chan *goldap.Conn // bound connections waiting for a lookup
	mu    sync.Mutex        // guards done, and sends to idle
	done  bool              // the pool is closed: returned connections are closed
}

// search runs req and reports whether it found an entry. An error means
// the directory could not answer (not reachable, bind refused, timeout,
// or an LDAP error such as a base DN that does not exist).
func (p *pool) search(ctx context.Context, req *goldap.SearchRequest) (bool, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return false, fmt.Errorf("waiting for a free connection: %w", ctx.Err())
	}
	defer func() { <-p.slots }()
	for {
		conn, reused, err := p.get(ctx)
		if err != nil {
			return false, err
		}
		found, err := searchOn(ctx, conn, req)
		if err == nil || !isNetwork(err) {
			p.put(conn)
			return found, err
		}
		conn.Close()
		// An idle connection may have been closed by the server (an idle
		// timeout, a restart): one more try, on a new connection.
		if !reused || ctx.Err() != nil {
			return false, err
		}
	}
}

// get returns an idle connection, or a new one.
func (p *pool) get(ctx context.Context) (conn *goldap.Conn, reused bool, err error) {
	select {
	case conn := <-p.idle:
		if !conn.IsClosing() {
			return conn, true, nil
		}
		conn.Close()
	default:
	}
	conn, err = p.dial(ctx)
	return conn, false, err
}

// put returns a working connection for the next lookup.
func (p *pool) put(conn *goldap.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		conn.Close()
		return
	}
	select {
	case p.idle <- conn:
	default: // cannot happen: no more connections than slots
		conn.Close()
	}
}

// close closes the idle connections, and those in use once returned.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	for {
		select {
		case conn := <-p.idle:
			conn.Close()
		default:
			return
		}
	}
}

// dial connects, upgrades with StartTLS if configured and binds, all
// within ctx's deadline (or the timeout).
func (p *pool) dial(ctx context.Context) (*goldap.Conn, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(p.timeout)
	}
	d := &net.Dialer{Deadline: deadline}
	var raw net.Conn
	var err error
	switch p.url.Scheme {
	case "ldapi":
		raw, err = d.DialContext(ctx, "unix", p.url.Host)
	case "ldaps":
		raw, err = (&tls.Dialer{NetDialer: d, Config: p.tls}).DialContext(ctx, "tcp", hostPort(p.url, "636"))
	default:
		raw, err = d.DialContext(ctx, "tcp", hostPort(p.url, "389"))
	}
	if err != nil {
		return nil, err
	}
	// The deadline bounds the StartTLS handshake too, which go-ldap runs
	// without a timeout of its own; it is lifted once the connection is
	// ready.
	_ = raw.SetDeadline(deadline)
	conn := goldap.NewConn(raw, p.url.Scheme == "ldaps")
	conn.Start()
	conn.SetTimeout(time.Until(deadline))
	if p.startTLS {
		if err := conn.StartTLS(p.tls); err != nil {
			conn.Close()
			return nil, fmt.Errorf("starttls: %w", err)
		}
	}
	if p.bindDN != "" {
		if err := conn.Bind(p.bindDN, p.password); err != nil {
			conn.Close()
			return nil, fmt.Errorf("bind as %q: %w", p.bindDN, err)
		}
	}
	_ = raw.SetDeadline(time.Time{})
	return conn, nil
}

// searchOn runs req on conn within ctx's deadline.
func searchOn(ctx context.Context, conn *goldap.Conn, req *goldap.SearchRequest) (bool, error) {
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetTimeout(time.Until(deadline))
	}
	res, err := conn.Search(req)
	switch {
	case err == nil:
	case goldap.IsErrorWithCode(err, goldap.LDAPResultSizeLimitExceeded) && len(res.Entries) > 0:
		return true, nil // more than one entry: the user exists all the same
	default:
		return false, err
	}
	if len(res.Entries) == 0 && len(res.Referrals) > 0 {
		return false, errors.New("only a referral in the answer (referrals are not followed)")
	}
	return len(res.Entries) > 0, nil
}

// hostPort is u's host with its port, or with port if it has none.
func hostPort(u *url.URL, port string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), port)
}
