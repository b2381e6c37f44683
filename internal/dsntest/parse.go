// Package dsntest reads Delivery Status Notifications back, so that tests
// can check what the dsn package wrote (and what other MTAs write).
package dsntest

import (
	"github.com/caddy-smtp/caddy-smtp/dsn"

	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
)

// ErrNotDSN is returned by Parse for a message that is not a delivery
// status notification: not multipart/report, or without a delivery-status
// part.
var ErrNotDSN = errors.New("dsn: not a delivery status notification")

// Field is one field of a delivery-status field group, unfolded, with the
// blanks around its value removed.
type Field struct {
	Name  string
	Value string
}

// Parsed is a DSN as read by Parse.
type Parsed struct {
	// Header is the DSN's top-level header section: From, To, Subject,
	// Auto-Submitted, Message-ID and so on.
	Header mail.Header
	// MediaType and Params are the top-level Content-Type:
	// "multipart/report" and its parameters ("report-type", "boundary").
	MediaType string
	Params    map[string]string
	// Text is the human-readable part, the first text/plain part before
	// the status part, with its transfer encoding undone.
	Text string
	// StatusType is the media type of the status part:
	// "message/delivery-status" or "message/global-delivery-status".
	StatusType string
	// Report holds what the DSN says, in the form Write takes it:
	//   - from the status part: EnvelopeID, ReportingMTA (the host name
	//     when its type is dns, else the whole "type; name"),
	//     ReceivedFromMTA, ArrivalDate and Recipients, with Final the bare
	//     address, Original "type;address", RemoteMTA and Diagnostic as
	//     written ("dns; ...", "smtp; ..."), utf-8 addresses decoded;
	//   - from the header: Sender (the To address), MessageID (without
	//     angle brackets) and Date;
	//   - UTF8 when the status part is message/global-delivery-status, and
	//     Return "FULL" when the whole message came back, "HDRS" when only
	//     its header did, "" when neither.
	// Unparsable dates are left zero.
	Report dsn.Report
	// MessageFields and RecipientFields are the status part's field groups
	// as read, extension fields included.
	MessageFields   []Field
	RecipientFields [][]Field
	// OriginalType is the media type of the returned message part
	// ("message/rfc822", "text/rfc822-headers", "message/global",
	// "message/global-headers"); "" when there is none. Original is its
	// content with any transfer encoding undone.
	OriginalType string
	Original     []byte
}

// Parse reads a DSN: a multipart/report message with a
// message/delivery-status or message/global-delivery-status part. It reads
// the whole message into memory; callers bound its size. It is lenient
// with what other MTAs write (missing per-message fields, comments after
// the action or status, base64 or quoted-printable parts) and returns
// ErrNotDSN (wrapped) for a message that is not a DSN.
func Parse(r io.Reader) (*Parsed, error) {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return nil, fmt.Errorf("dsn: reading header: %w", err)
	}
	p := &Parsed{Header: msg.Header}
	p.MediaType, p.Params, err = mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || p.MediaType != "multipart/report" {
		return nil, fmt.Errorf("%w: content type %q", ErrNotDSN, msg.Header.Get("Content-Type"))
	}
	if p.Params["boundary"] == "" {
		return nil, fmt.Errorf("%w: multipart/report without a boundary", ErrNotDSN)
	}
	mr := multipart.NewReader(msg.Body, p.Params["boundary"])
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dsn: reading parts: %w", err)
		}
		mediaType := "text/plain"
		if ct := part.Header.Get("Content-Type"); ct != "" {
			mediaType, _, err = mime.ParseMediaType(ct)
			if err != nil {
				mediaType, _, _ = strings.Cut(strings.ToLower(strings.TrimSpace(ct)), ";")
			}
		}
		body, err := decodeBody(part, part.Header.Get("Content-Transfer-Encoding"))
		if err != nil {
			return nil, fmt.Errorf("dsn: reading %s part: %w", mediaType, err)
		}
		switch mediaType {
		case "text/plain":
			if p.Text == "" && p.StatusType == "" {
				p.Text = string(body)
			}
		case "message/delivery-status", "message/global-delivery-status":
			if p.StatusType == "" {
				p.StatusType = mediaType
				p.parseStatus(body)
			}
		case "message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers":
			if p.OriginalType == "" {
				p.OriginalType, p.Original = mediaType, body
			}
		}
	}
	if p.StatusType == "" {
		return nil, fmt.Errorf("%w: no delivery-status part", ErrNotDSN)
	}
	p.fillFromHeader()
	return p, nil
}

// decodeBody reads a part and undoes its Content-Transfer-Encoding.
func decodeBody(r io.Reader, cte string) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	}
	return io.ReadAll(r)
}

// fillFromHeader sets the Report fields that come from the top-level header
// and the kinds of parts.
func (p *Parsed) fillFromHeader() {
	rep := &p.Report
	rep.Sender = headerAddress(p.Header.Get("To"))
	rep.MessageID = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(p.Header.Get("Message-ID")), "<"), ">")
	rep.Date, _ = p.Header.Date()
	rep.UTF8 = p.StatusType == "message/global-delivery-status"
	switch p.OriginalType {
	case "message/rfc822", "message/global":
		rep.Return = "FULL"
	case "text/rfc822-headers", "message/global-headers":
		rep.Return = "HDRS"
	}
}

// headerAddress returns the (first) address in an address header field,
// falling back to what is between angle brackets for addresses net/mail
// does not accept.
func headerAddress(v string) string {
	if a, err := mail.ParseAddress(v); err == nil {
		return a.Address
	}
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		v = v[i+1:]
		if j := strings.IndexByte(v, '>'); j >= 0 {
			v = v[:j]
		}
	}
	return strings.TrimSpace(v)
}

// parseStatus reads the field groups of a delivery-status part into the
// Parsed fields and the Report.
func (p *Parsed) parseStatus(body []byte) {
	groups := splitFields(body)
	if len(groups) > 0 && (Lookup(groups[0], "Reporting-MTA") != "" || Lookup(groups[0], "Final-Recipient") == "") {
		p.MessageFields, groups = groups[0], groups[1:]
	}
	p.RecipientFields = groups

	rep := &p.Report
	rep.EnvelopeID = Lookup(p.MessageFields, "Original-Envelope-Id")
	rep.ReportingMTA = Lookup(p.MessageFields, "Reporting-MTA")
	if typ, name, ok := dsn.SplitTyped(rep.ReportingMTA); ok && strings.EqualFold(typ, "dns") {
		rep.ReportingMTA = name
	}
	rep.ReceivedFromMTA = Lookup(p.MessageFields, "Received-From-MTA")
	rep.ArrivalDate = parseDate(Lookup(p.MessageFields, "Arrival-Date"))

	for _, g := range groups {
		rc := dsn.Recipient{
			Final:          parseAddress(Lookup(g, "Final-Recipient"), false),
			Original:       parseAddress(Lookup(g, "Original-Recipient"), true),
			Action:         dsn.Action(strings.ToLower(firstWord(Lookup(g, "Action")))),
			Status:         firstWord(Lookup(g, "Status")),
			RemoteMTA:      Lookup(g, "Remote-MTA"),
			Diagnostic:     Lookup(g, "Diagnostic-Code"),
			LastAttempt:    parseDate(Lookup(g, "Last-Attempt-Date")),
			WillRetryUntil: parseDate(Lookup(g, "Will-Retry-Until")),
		}
		rep.Recipients = append(rep.Recipients, rc)
	}
}

// splitFields splits a delivery-status body into its field groups: runs of
// header-style fields separated by blank lines. Folded lines are unfolded
// by removing the line break only, so a value comes back as written;
// lines that are not fields are skipped.
func splitFields(body []byte) [][]Field {
	var groups [][]Field
	var cur []Field
	for line := range strings.Lines(string(body)) {
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.Trim(line, " \t") == "":
			if len(cur) > 0 {
				groups = append(groups, cur)
				cur = nil
			}
		case isBlank(line[0]):
			if len(cur) > 0 {
				cur[len(cur)-1].Value += line
			}
		default:
			name, value, ok := strings.Cut(line, ":")
			if ok {
				cur = append(cur, Field{Name: strings.TrimSpace(name), Value: value})
			}
		}
	}
	if len(cur) > 0 {
		groups = append(groups, cur)
	}
	for _, g := range groups {
		for i := range g {
			g[i].Value = strings.Trim(g[i].Value, " \t")
		}
	}
	return groups
}

// Lookup returns the value of the first field called name, or "".
func Lookup(fields []Field, name string) string {
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// parseAddress reads an address-type ";" address value, decoding the
// utf-8 type's \x{HEX} escapes. It returns the bare address, or with
// withType "type;address" (the form of Recipient.Original).
func parseAddress(v string, withType bool) string {
	typ, addr, ok := dsn.SplitTyped(v)
	if !ok {
		return v
	}
	if strings.EqualFold(typ, "utf-8") {
		addr = dsn.DecodeUTF8Addr(addr)
	}
	if withType {
		return typ + ";" + addr
	}
	return addr
}

// firstWord returns v up to the first blank or comment.
func firstWord(v string) string {
	if i := strings.IndexAny(v, " \t("); i >= 0 {
		return v[:i]
	}
	return v
}

// parseDate reads an RFC 5322 date-time; zero if there is none or it is
// malformed.
func parseDate(v string) time.Time {
	if v == "" {
		return time.Time{}
	}
	t, err := mail.ParseDate(v)
	if err != nil {
		return time.Time{}
	}
	return t
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }
