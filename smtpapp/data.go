package smtpapp

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/dataread"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// tlsRequiredScanner watches the header section of a message as it
// streams past for the field "TLS-Required: No" (RFC 8689 section 5), and
// notes the Message-ID (a folded Message-ID is not followed: logs only).
type tlsRequiredScanner struct {
	line      []byte
	done      bool // the header section is over
	optout    bool
	messageID string // the Message-ID field's value, for the logs
}

func (t *tlsRequiredScanner) Write(p []byte) (int, error) {
	for _, b := range p {
		if t.done {
			break
		}
		if b != '\n' {
			if len(t.line) < 256 {
				t.line = append(t.line, b)
			}
			continue
		}
		line := strings.TrimRight(string(t.line), "\r")
		t.line = t.line[:0]
		if line == "" {
			t.done = true
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), "TLS-Required") && strings.EqualFold(strings.TrimSpace(value), "No") {
			t.optout = true
		}
		if ok && t.messageID == "" && strings.EqualFold(strings.TrimSpace(name), "Message-ID") {
			t.messageID = SanitizeHeaderValue(strings.TrimSpace(strings.Trim(strings.TrimSpace(value), "<>")))
		}
	}
	return len(p), nil
}

// strictData wraps what go-smtp hands Data in our strict reader
// (smtpapp/dataread): every line ending CRLF, no NUL, the end of data only
// at CRLF "." CRLF, read in large chunks. For DATA it takes go-smtp's
// buffered connection reader (dataread.Hijack); for BDAT (and if the hijack
// is refused because go-smtp changed) it checks the stream it is given.
// done must be called before Data returns: it consumes the rest of the
// data so the connection stays in step with the client.
func (s *session) strictData(r io.Reader) (src io.Reader, done func()) {
	opt := dataread.Options{MaxSize: s.srv.MaxMessageSize, Normalize: s.srv.BareLineEndings == "normalize"}
	if br, finish, ok := dataread.Hijack(r); ok {
		opt.MaxLineLength = s.srv.MaxLineLength // go-smtp's, lifted by Hijack
		rd := dataread.NewReader(br, opt)
		return rd, func() {
			_ = rd.Drain()
			finish()
		}
	}
	return dataread.NewChunkChecker(r, opt), func() {}
}

// destWriter marks errors of the destination (our disk), as opposed to
// errors reading the client's data.
type destWriter struct{ w io.Writer }

// writeError is an error of the destination.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }

func (d destWriter) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	if err != nil {
		return n, writeError{err}
	}
	return n, nil
}

// receivedHeader returns our trace header (RFC 5321 4.4) for a message, in
// the style Postfix uses so that existing tools parse it:
//
//	Received: from client.example ([192.0.2.1])
//		(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)
//		by mx.example.com (caddy-smtp) with ESMTPS id ABCDEF
//		for <rcpt@example.com>; Sat, 28 Nov 2026 10:33:53 +0000
//
// The recipient is named only when there is exactly one, so that a copy
// does not disclose the other recipients.
func receivedHeader(hostname string, m *queue.Message, oneRcpt bool) string {
	var b strings.Builder
	helo := SanitizeHeaderValue(m.Client.Helo)
	if helo == "" {
		helo = "unknown"
	}
	fmt.Fprintf(&b, "Received: from %s (%s)\r\n", helo, addressLiteral(m.Client.Addr))
	if m.Client.TLSVersion != "" {
		fmt.Fprintf(&b, "\t(using %s with cipher %s)\r\n", m.Client.TLSVersion, m.Client.TLSCipher)
	}
	fmt.Fprintf(&b, "\tby %s (caddy-smtp) with %s id %s", hostname, withProtocol(m), m.ID)
	if oneRcpt && len(m.Recipients) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", SanitizeHeaderValue(m.Recipients[0].Addr))
	}
	fmt.Fprintf(&b, "; %s\r\n", m.Arrived.Format(time.RFC1123Z))
	return b.String()
}

// withProtocol returns the "with" keyword of RFC 3848 / RFC 6531.
func withProtocol(m *queue.Message) string {
	p := "ESMTP"
	if m.SMTPUTF8 {
		p = "UTF8SMTP"
	}
	if m.Client.TLSVersion != "" {
		p += "S"
	}
	if m.Client.AuthUser != "" {
		p += "A"
	}
	return p
}

// addressLiteral formats an IP address as in a Received header: [192.0.2.1]
// or [IPv6:2001:db8::1].
func addressLiteral(ip string) string {
	if strings.Contains(ip, ":") {
		return "[IPv6:" + ip + "]"
	}
	return "[" + ip + "]"
}

// SanitizeHeaderValue keeps client-supplied text (an address, a HELO name) from breaking the header:
// control characters and header syntax characters are replaced.
func SanitizeHeaderValue(s string) string {
	if len(s) > 255 {
		s = s[:255]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x21 || r == 0x7f || r == '(' || r == ')' || r == ';' || r == '<' || r == '>' {
			return '_'
		}
		return r
	}, s)
}
