package smtpapp_test

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordCounter counts the TLS records that arrive from the server, from
// the 5-byte record headers in the byte stream below a tls.Client.
type recordCounter struct {
	net.Conn
	mu      sync.Mutex
	hdr     []byte
	need    int // bytes of the current record still to come
	records int
}

func (c *recordCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	for b := p[:n]; len(b) > 0; {
		if c.need > 0 {
			k := min(c.need, len(b))
			c.need -= k
			b = b[k:]
			continue
		}
		k := min(5-len(c.hdr), len(b))
		c.hdr = append(c.hdr, b[:k]...)
		b = b[k:]
		if len(c.hdr) == 5 {
			c.need = int(binary.BigEndian.Uint16(c.hdr[3:]))
			c.hdr = c.hdr[:0]
			c.records++
		}
	}
	return n, err
}

func (c *recordCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.records
}

// TestMultilineReplyInOneWrite: the EHLO reply, a dozen lines that go-smtp
// writes and flushes one by one, reaches the client in one piece: before
// STARTTLS as one segment (one read gets all of it), after STARTTLS as one
// TLS record.
func TestMultilineReplyInOneWrite(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{})[0]
	d := dial(t, addr)
	d.expect("220")

	d.send("EHLO client.example")
	buf := make([]byte, 8192)
	_ = d.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := d.conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	first := string(buf[:n])
	lines := strings.Split(strings.TrimSuffix(first, "\r\n"), "\r\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[len(lines)-1], "250 ") {
		t.Fatalf("one read of the plaintext EHLO reply got %q, want every line of it", first)
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "250-") {
			t.Fatalf("line %q of %q", l, first)
		}
	}

	d.cmd("STARTTLS", "220")
	rc := &recordCounter{Conn: d.conn}
	tc := tls.Client(rc, &tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	d.conn, d.r = tc, bufio.NewReader(tc)
	before := rc.count()
	reply := d.cmd("EHLO client.example", "250")
	if got := strings.Count(reply, "\n") + 1; got < 4 {
		t.Fatalf("EHLO after STARTTLS: %d lines: %q", got, reply)
	}
	if got := rc.count() - before; got != 1 {
		t.Errorf("the EHLO reply after STARTTLS came in %d TLS records, want 1", got)
	}
	// A one-line reply is written at once too (nothing is held).
	before = rc.count()
	d.cmd("NOOP", "250")
	if got := rc.count() - before; got != 1 {
		t.Errorf("NOOP's reply came in %d TLS records, want 1", got)
	}
	d.cmd("QUIT", "221")
}
