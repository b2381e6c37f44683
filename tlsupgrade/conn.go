package tlsupgrade

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// quitTimeout bounds the wait for the reply to QUIT in Conn.Close.
const quitTimeout = 10 * time.Second

// Conn is an SMTP session returned by [Dial]: a go-smtp Client that has
// already said EHLO, and what happened to TLS on the way.
type Conn struct {
	// Client is the go-smtp client for the session. Its
	// TLSConnectionState always reports false (the connection is wrapped):
	// use [Conn.TLSConnectionState].
	Client *smtp.Client
	// Result says what happened to TLS.
	Result Result

	netConn   net.Conn      // the TCP connection
	tlsConn   *tls.Conn     // nil in plaintext
	wire      *handoverConn // what Client reads and writes, for SendBDAT
	stop      func() bool   // unregisters the close-on-ctx-done hook
	closeOnce sync.Once
	closeErr  error
}

// TLSConnectionState returns the state of the TLS session, and false in
// plaintext.
func (c *Conn) TLSConnectionState() (tls.ConnectionState, bool) {
	if c.tlsConn == nil {
		return tls.ConnectionState{}, false
	}
	return c.tlsConn.ConnectionState(), true
}

// RemoteAddr returns the address of the server.
func (c *Conn) RemoteAddr() net.Addr {
	return c.netConn.RemoteAddr()
}

// Close says QUIT (waiting at most 10 seconds for the reply) unless the
// context of Dial has ended, then closes the connection. It is safe to call
// more than once and after Client.Quit. Do not call it with a DATA writer
// still open: QUIT would become part of the message.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		if c.stop() {
			c.Client.CommandTimeout = min(c.Client.CommandTimeout, quitTimeout)
			if c.Client.Quit() == nil {
				return // Quit closed the connection
			}
		}
		if err := c.Client.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			c.closeErr = err
		}
	})
	return c.closeErr
}

// handoverConn is the connection given to go-smtp's Client: it first reads
// pending (the replayed greeting and any plaintext the prelude had
// buffered), and it bounds every write, since go-smtp sets no deadline while
// it writes a message body.
type handoverConn struct {
	net.Conn
	pending      []byte
	writeTimeout time.Duration
}

func (c *handoverConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *handoverConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	return c.Conn.Write(b)
}
