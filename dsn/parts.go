package dsn

import (
	"bytes"
	"crypto/rand"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// part is one body part of the multipart/report.
type part struct {
	contentType string // Content-Type value, with parameters
	description string // Content-Description value; "" for none
	body        []byte
}

// writeTo writes the part with its delimiter line. The CRLF that ends the
// body belongs to the next delimiter, so the body comes back byte for byte.
func (p part) writeTo(w io.Writer, boundary string) error {
	var h bytes.Buffer
	h.WriteString("\r\n--" + boundary + "\r\n")
	writeField(&h, "Content-Type", p.contentType)
	if p.description != "" {
		writeField(&h, "Content-Description", p.description)
	}
	if !isASCII(string(p.body)) {
		writeField(&h, "Content-Transfer-Encoding", "8bit")
	}
	h.WriteString("\r\n")
	if _, err := w.Write(h.Bytes()); err != nil {
		return err
	}
	_, err := w.Write(p.body)
	return err
}

// newBoundary returns a random boundary that occurs in no part.
func newBoundary(parts []part) string {
	for {
		b := "=_" + rand.Text()
		clash := false
		for _, p := range parts {
			if bytes.Contains(p.body, []byte("--"+b)) {
				clash = true
			}
		}
		if !clash {
			return b
		}
	}
}

// textPart is the human-readable first part.
func textPart(text string) part {
	charset := "us-ascii"
	if !isASCII(text) {
		charset = "utf-8"
	}
	return part{
		contentType: "text/plain; charset=" + charset,
		description: "Notification",
		body:        []byte(text),
	}
}

// originalPart is the third part: the returned message or its header.
func originalPart(o originalCopy, global bool) part {
	if o.returned == ReturnedFull {
		p := part{contentType: "message/rfc822", description: "Returned message", body: o.data}
		if global {
			p.contentType = "message/global"
		}
		return p
	}
	p := part{contentType: "text/rfc822-headers", description: "Returned message header", body: o.data}
	if global {
		p.contentType = "message/global-headers"
	}
	return p
}

// statusFields is the body of the message/delivery-status part: the
// per-message fields, then for each recipient a blank line and its fields
// (RFC 3464 section 2.1), in the order of the RFC's grammar.
func statusFields(r *Report, global bool) []byte {
	var b bytes.Buffer
	if id := clean(r.EnvelopeID); id != "" {
		writeField(&b, "Original-Envelope-Id", id)
	}
	writeField(&b, "Reporting-MTA", "dns; "+r.ReportingMTA)
	if m := clean(r.ReceivedFromMTA); m != "" {
		writeField(&b, "Received-From-MTA", mtaName(m))
	}
	if !r.ArrivalDate.IsZero() {
		writeField(&b, "Arrival-Date", formatDate(r.ArrivalDate))
	}
	for _, rc := range r.Recipients {
		b.WriteString("\r\n")
		if rc.Original != "" {
			typ, addr, _ := strings.Cut(rc.Original, ";")
			writeField(&b, "Original-Recipient", formatAddress(typ, addr, global, ";"))
		}
		writeField(&b, "Final-Recipient", formatAddress("rfc822", rc.Final, global, "; "))
		writeField(&b, "Action", string(rc.Action))
		writeField(&b, "Status", rc.status())
		if m := clean(rc.RemoteMTA); m != "" {
			writeField(&b, "Remote-MTA", mtaName(m))
		}
		if d := clean(rc.Diagnostic); d != "" {
			writeField(&b, "Diagnostic-Code", diagnostic(d))
		}
		if !rc.LastAttempt.IsZero() {
			writeField(&b, "Last-Attempt-Date", formatDate(rc.LastAttempt))
		}
		if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			writeField(&b, "Will-Retry-Until", formatDate(rc.WillRetryUntil))
		}
	}
	return b.Bytes()
}

// status returns the recipient's status code, or the action's default.
func (rc *Recipient) status() string {
	if rc.Status == "" {
		return defaultStatus(rc.Action)
	}
	return rc.Status
}

func formatDate(t time.Time) string { return t.Format(time.RFC1123Z) }

// SplitTyped splits "type; value" where type is an atom (RFC 3464 address,
// MTA name and diagnostic types). ok is false when s has no such prefix.
func SplitTyped(s string) (typ, value string, ok bool) {
	typ, value, ok = strings.Cut(s, ";")
	typ = strings.TrimSpace(typ)
	if !ok || !isAtom(typ) {
		return "", s, false
	}
	return typ, strings.TrimSpace(value), true
}

// mtaName gives an MTA name the "dns" type unless it has a type.
func mtaName(s string) string {
	if _, _, ok := SplitTyped(s); ok {
		return s
	}
	return "dns; " + s
}

// diagnostic gives a diagnostic text a type unless it has one: "smtp" for
// an SMTP reply, "x-local" for anything else.
func diagnostic(s string) string {
	if _, _, ok := SplitTyped(s); ok {
		return s
	}
	if len(s) >= 3 && strings.IndexByte("245", s[0]) >= 0 && isDigits(s[1:3]) &&
		(len(s) == 3 || s[3] == ' ' || s[3] == '-') {
		return "smtp; " + s
	}
	return "x-local; " + s
}

func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

// formatAddress formats a Final-Recipient or Original-Recipient value. An
// rfc822 address with non-ASCII characters becomes the RFC 6533 "utf-8"
// type. A utf-8 address is written as it is in a global report and in the
// 7-bit utf-8-addr-xtext form otherwise.
func formatAddress(typ, addr string, global bool, sep string) string {
	typ = strings.ToLower(strings.TrimSpace(typ))
	addr = strings.TrimSpace(addr)
	if typ == "rfc822" && !isASCII(addr) {
		typ = "utf-8"
	}
	if typ == "utf-8" && !global {
		addr = utf8AddrXtext(addr)
	}
	return typ + sep + addr
}

// utf8AddrXtext encodes s in the utf-8-addr-xtext form of RFC 6533 section
// 3: characters other than printable ASCII, and '+', '=' and '\', become
// \x{HEX} with the code point in upper-case hex.
func utf8AddrXtext(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r > ' ' && r < 0x7f && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
			continue
		}
		b.WriteString(`\x{`)
		b.WriteString(strings.ToUpper(strconv.FormatInt(int64(r), 16)))
		b.WriteString("}")
	}
	return b.String()
}

// DecodeUTF8Addr undoes utf8AddrXtext, and reads the utf-8-addr-unitext
// form too: each well-formed \x{HEX} becomes its character. Anything else is
// kept as it is.
func DecodeUTF8Addr(s string) string {
	if !strings.Contains(s, `\x{`) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, `\x{`)
		if i < 0 {
			break
		}
		b.WriteString(s[:i])
		s = s[i:]
		end := strings.IndexByte(s, '}')
		hexits := ""
		if end > 3 {
			hexits = s[3:end]
		}
		n, err := strconv.ParseUint(hexits, 16, 32)
		if hexits == "" || len(hexits) > 6 || err != nil || !utf8.ValidRune(rune(n)) {
			b.WriteString(`\x{`)
			s = s[3:]
			continue
		}
		b.WriteRune(rune(n))
		s = s[end+1:]
	}
	b.WriteString(s)
	return b.String()
}
