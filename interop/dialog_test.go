package interop

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// smtpConn is a raw SMTP client for what swaks cannot do (SMTPUTF8,
// BODY=8BITMIME, SIZE=, BDAT, dropping a connection mid-DATA): it sends
// exact bytes and checks reply codes.
type smtpConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// dialSMTP connects to addr; with implicit set, TLS starts at once.
func dialSMTP(t *testing.T, addr string, implicit *tls.Config) *smtpConn {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	var c net.Conn
	var err error
	if implicit != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, implicit)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	s := &smtpConn{t: t, c: c, r: bufio.NewReader(c)}
	s.expect(220)
	return s
}

// reply reads one (possibly multi-line) reply.
func (s *smtpConn) reply() (int, string) {
	s.t.Helper()
	var lines []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("reading reply (so far %q): %v", lines, err)
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	last := lines[len(lines)-1]
	code, err := strconv.Atoi(last[:min(3, len(last))])
	if err != nil {
		s.t.Fatalf("malformed reply %q", lines)
	}
	return code, strings.Join(lines, "\n")
}

// expect reads a reply and fails unless its code is want.
func (s *smtpConn) expect(want int) string {
	s.t.Helper()
	code, text := s.reply()
	if code != want {
		s.t.Fatalf("reply %q, want code %d", text, want)
	}
	return text
}

// write sends bytes as they are.
func (s *smtpConn) write(b []byte) {
	s.t.Helper()
	if _, err := s.c.Write(b); err != nil {
		s.t.Fatalf("write: %v", err)
	}
}

// cmd sends one command line and expects a reply code.
func (s *smtpConn) cmd(line string, want int) string {
	s.t.Helper()
	s.write([]byte(line + "\r\n"))
	return s.expect(want)
}

// startTLS upgrades the connection with STARTTLS.
func (s *smtpConn) startTLS(cfg *tls.Config) tls.ConnectionState {
	s.t.Helper()
	s.cmd("STARTTLS", 220)
	tc := tls.Client(s.c, cfg)
	if err := tc.Handshake(); err != nil {
		s.t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	s.c, s.r = tc, bufio.NewReader(tc)
	return tc.ConnectionState()
}

// data sends DATA, the message (dot-stuffed here) and the end marker, and
// returns the final reply.
func (s *smtpConn) data(msg []byte) (int, string) {
	s.t.Helper()
	s.cmd("DATA", 354)
	s.write(dotStuff(msg))
	s.write([]byte(".\r\n"))
	return s.reply()
}

// dotStuff doubles a leading dot on every line (RFC 5321 4.5.2); msg must
// end with CRLF.
func dotStuff(msg []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.SplitAfter(msg, []byte("\r\n")) {
		if len(line) > 0 && line[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(line)
	}
	return b.Bytes()
}

// poolFromFile reads PEM certificates into a pool.
func poolFromFile(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", path)
	}
	return pool
}

// waitTLSReady waits until a STARTTLS handshake with addr verifies
// against roots for name: the certificate has been issued and is served.
func waitTLSReady(t *testing.T, addr, name string, roots *x509.CertPool, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := tryStartTLS(addr, &tls.Config{ServerName: name, RootCAs: roots}, limit)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no verified TLS on %s for %s after %s: %v", addr, name, limit, err)
		}
		pause(500 * time.Millisecond)
	}
}

func tryStartTLS(addr string, cfg *tls.Config, limit time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(limit))
	r := bufio.NewReader(c)
	readReply := func() (string, error) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return "", err
			}
			if len(line) < 4 || line[3] != '-' {
				return line, nil
			}
		}
	}
	if _, err := readReply(); err != nil {
		return err
	}
	fmt.Fprintf(c, "EHLO probe.example\r\n")
	if _, err := readReply(); err != nil {
		return err
	}
	fmt.Fprintf(c, "STARTTLS\r\n")
	if line, err := readReply(); err != nil || !strings.HasPrefix(line, "220") {
		return fmt.Errorf("STARTTLS: %q %v", line, err)
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	fmt.Fprintf(tc, "QUIT\r\n")
	return nil
}

// stripFields removes the header fields that hops prepended to a stored
// message, in order, checking each one's name (and that it contains
// every string of the matching want entry). It returns the fields and
// the rest of the message, which must be the original byte for byte.
func stripFields(t *testing.T, msg []byte, want ...[]string) ([]string, []byte) {
	t.Helper()
	var fields []string
	for _, w := range want {
		name := w[0]
		end := 0
		for {
			i := bytes.Index(msg[end:], []byte("\r\n"))
			if i < 0 {
				t.Fatalf("unterminated header field looking for %s", name)
			}
			end += i + 2
			if end >= len(msg) || (msg[end] != ' ' && msg[end] != '\t') {
				break // the next line is not a continuation
			}
		}
		field := string(msg[:end])
		if !strings.HasPrefix(strings.ToLower(field), strings.ToLower(name)+":") {
			t.Fatalf("prepended field %d is %q, want %s", len(fields)+1, firstLine(field), name)
		}
		for _, s := range w[1:] {
			if !strings.Contains(field, s) {
				t.Fatalf("%s field %q does not contain %q", name, field, s)
			}
		}
		fields = append(fields, field)
		msg = msg[end:]
	}
	return fields, msg
}

func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// sameBytes fails unless got (a stored message minus prepended fields) is
// the original message.
func sameBytes(t *testing.T, what string, got, orig []byte) {
	t.Helper()
	if sha(got) == sha(orig) {
		return
	}
	i := 0
	for i < len(got) && i < len(orig) && got[i] == orig[i] {
		i++
	}
	lo := max(0, i-40)
	t.Fatalf("%s: sha256 %s, original %s (%d vs %d bytes); first difference at byte %d:\n got  %q\n want %q",
		what, sha(got), sha(orig), len(got), len(orig), i,
		got[lo:min(len(got), i+40)], orig[lo:min(len(orig), i+40)])
}
