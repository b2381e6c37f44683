// Package dsn builds Delivery Status Notifications: the
// multipart/report messages (RFC 6522) with a message/delivery-status part
// (RFC 3464) that an MTA sends back to the envelope sender when a message
// fails, is delayed, or (when asked for with the RFC 3461 NOTIFY parameter)
// is delivered or relayed.
//
// Write produces a complete RFC 5322 message with CRLF line endings:
//
//	From: "Mail Delivery System" <MAILER-DAEMON@mx.example.org>
//	To: <sender@example.com>
//	Subject: Undelivered Mail Returned to Sender
//	Date: Mon, 02 Mar 2026 10:00:00 +0000
//	Message-ID: <...@mx.example.org>
//	Auto-Submitted: auto-replied
//	MIME-Version: 1.0
//	Content-Type: multipart/report; report-type=delivery-status; boundary="..."
//
//	part 1: text/plain, an explanation for people
//	part 2: message/delivery-status, the per-message and per-recipient fields
//	part 3: message/rfc822 (RET=FULL) or text/rfc822-headers (RET=HDRS)
//
// The header section alone is returned for a message that was sent with
// REQUIRETLS (RFC 8689 section 5), and such a DSN must itself be sent with
// REQUIRETLS: see Report.RequireTLS.
//
// When the original message or any address is internationalised (SMTPUTF8,
// RFC 6531) the RFC 6533 types are used instead: report-type
// global-delivery-status, message/global-delivery-status, message/global and
// message/global-headers.
//
// A DSN is sent with the null reverse-path (MAIL FROM:<>) so that it never
// causes another DSN, and only to a non-null sender: Write refuses a Report
// without a Sender. Which events call for a DSN is decided by ShouldNotify
// from the recipient's NOTIFY parameter.
//
// Parse reads a DSN back, ours or another MTA's.
package dsn

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Action is the per-recipient Action field of RFC 3464 section 2.3.3: what
// the reporting MTA did with the message for that recipient.
type Action string

// The actions of RFC 3464.
const (
	// Failed: the message could not be delivered and will not be retried.
	Failed Action = "failed"
	// Delayed: delivery has not succeeded yet; it is still being retried.
	Delayed Action = "delayed"
	// Delivered: the message was delivered to the recipient's mailbox.
	Delivered Action = "delivered"
	// Relayed: the message was handed to a system that does not send DSNs,
	// so no further notification will come.
	Relayed Action = "relayed"
	// Expanded: the recipient was an alias or list and the message was
	// delivered to its members.
	Expanded Action = "expanded"
)

// Valid reports whether a is one of the five actions of RFC 3464.
func (a Action) Valid() bool {
	switch a {
	case Failed, Delayed, Delivered, Relayed, Expanded:
		return true
	}
	return false
}

// Recipient is one per-recipient field group of a DSN.
type Recipient struct {
	// Final is the recipient address the report is about, as it was given
	// in RCPT TO (no angle brackets, no address type). It becomes the
	// Final-Recipient field: "rfc822; a@example.com", or "utf-8; ..." for
	// a non-ASCII address.
	Final string
	// Original is the RFC 3461 ORCPT parameter as "type;address" with the
	// xtext encoding already removed, as go-smtp's RcptOptions and
	// queue.Recipient.ORCPT give it (e.g. "rfc822;a@example.com"); "" when
	// the client sent none. It becomes the Original-Recipient field.
	Original string
	// Action is what happened for this recipient.
	Action Action
	// Status is the RFC 3463 enhanced status code, e.g. "5.1.1". When
	// empty, a generic code for the action is used (5.0.0 for failed,
	// 4.0.0 for delayed, 2.0.0 otherwise).
	Status string
	// RemoteMTA names the server that gave the Diagnostic, as
	// "dns; mx.example.net"; a bare host name gets the "dns; " type added.
	// Empty when no remote server was involved.
	RemoteMTA string
	// Diagnostic is the reply or error that explains the Action, as
	// "smtp; 550 5.1.1 user unknown". Without a type prefix, "smtp; " is
	// added when the text starts like an SMTP reply ("550 ..."), and
	// "x-local; " otherwise. It is shown to the sender: it must not carry
	// secrets or internal details.
	Diagnostic string
	// LastAttempt is when delivery was last tried; zero to leave it out.
	LastAttempt time.Time
	// WillRetryUntil is when a delayed message will be given up; written
	// only for the delayed action, and only when not zero.
	WillRetryUntil time.Time
}

// Report is everything a DSN says: the per-message fields, the recipients,
// and the envelope and header facts needed to address it.
type Report struct {
	// ReportingMTA is our host name: the Reporting-MTA field
	// ("dns; mx.example.org") and the domain of the From address.
	ReportingMTA string
	// EnvelopeID is the RFC 3461 ENVID parameter of the original message,
	// with its xtext encoding removed; "" if none was given.
	EnvelopeID string
	// ArrivalDate is when the original message arrived; zero to leave the
	// Arrival-Date field out.
	ArrivalDate time.Time
	// ReceivedFromMTA names the client that sent us the original message,
	// as "dns; client.example.com"; a bare host name gets the "dns; " type
	// added. Empty to leave the field out.
	ReceivedFromMTA string
	// Sender is the envelope sender (reverse-path) of the original message:
	// the DSN is addressed to it. It must not be empty (never send a DSN
	// about a message from the null sender).
	Sender string
	// Return is the RFC 3461 RET parameter of the original: "FULL" to
	// return the whole message with a failure report, "HDRS" to return
	// its header section only. Default: "HDRS".
	Return string
	// UTF8 records that the original message was sent with SMTPUTF8. It
	// selects the RFC 6533 media types, as do non-ASCII addresses and a
	// UTF-8 header section in the original.
	UTF8 bool
	// RequireTLS records that the original message was sent with the
	// REQUIRETLS MAIL parameter (RFC 8689). A report on such a message
	// returns its header section at most, whatever Return says: RFC 8689
	// section 5 has the reporting MTA act as if RET=HDRS had been given and
	// disregard RET=FULL. The DSN must then itself be sent with REQUIRETLS
	// (Info.RequireTLS), as that section asks of every non-delivery report
	// about a REQUIRETLS message; a report on a delivery carries the same
	// header, so it is flagged too.
	RequireTLS bool
	// Recipients are the per-recipient reports; at least one is needed.
	Recipients []Recipient
	// MessageID is the DSN's own Message-ID, with or without angle
	// brackets; when empty a random one in the ReportingMTA domain is made.
	MessageID string
	// Date is the DSN's Date field. Default: the current time.
	Date time.Time
}

// Returned says what of the original message a DSN carries.
type Returned string

// What a DSN can carry of the original message.
const (
	ReturnedNothing Returned = ""        // no original was given
	ReturnedHeaders Returned = "headers" // its header section only
	ReturnedFull    Returned = "full"    // the whole message
)

// Info describes a DSN that WriteInfo produced, for whoever queues it.
type Info struct {
	// MessageID is the DSN's Message-ID, without angle brackets.
	MessageID string
	// Subject is the DSN's Subject field.
	Subject string
	// Global reports that the RFC 6533 (internationalised) types were used.
	Global bool
	// SMTPUTF8 reports that the DSN's header section holds UTF-8 (a
	// non-ASCII sender or host name): it must be sent with the SMTPUTF8
	// MAIL parameter.
	SMTPUTF8 bool
	// EightBit reports that the DSN holds octets above 127: it should be
	// sent with BODY=8BITMIME.
	EightBit bool
	// RequireTLS reports that the DSN is about a REQUIRETLS message
	// (Report.RequireTLS): it must be sent with the REQUIRETLS MAIL
	// parameter, so that it travels only as the original would have.
	RequireTLS bool
	// Returned is what of the original message the DSN carries.
	Returned Returned
}

// Errors returned by Write for a Report that cannot become a DSN.
var (
	// ErrNullSender: the original had the null reverse-path; RFC 3461 and
	// RFC 5321 forbid sending it a DSN.
	ErrNullSender = errors.New("dsn: no sender to notify (null reverse-path)")
	// ErrNoRecipients: a DSN reports on at least one recipient.
	ErrNoRecipients = errors.New("dsn: report has no recipients")
)

// Write writes a complete DSN message for r to w; see the package
// documentation for its layout. original is the message being reported on
// (its header section and body, CRLF line endings, as spooled); it may be
// nil to include no copy of it.
//
// With Return "FULL", a report that has at least one failed recipient and
// an original of at most maxFullSize octets returns the whole original,
// byte for byte, as message/rfc822 (RFC 3461 section 4.3: the content is
// returned with failure reports only), unless the original was sent with
// REQUIRETLS (Report.RequireTLS). Otherwise, or when the original is
// larger, or is not well-formed mail (a bare CR or LF, a NUL, or a line
// longer than 998 octets), only its header section is returned, as
// text/rfc822-headers; maxFullSize <= 0 never returns the full message.
// Up to maxFullSize+1 octets of the original are held in memory.
//
// Field values are put on one line each: CR and LF become spaces, and
// lines are folded at whitespace to stay within 78 octets where possible
// and 998 octets always (a run of more than 990 octets without
// whitespace is broken by inserting a fold, which reads back as a space).
//
// An empty original, or one with an empty header section when only that
// is returned, gives a DSN without a third part.
//
// Nothing is written when r is invalid; an error from w may leave a
// partial message behind.
func Write(w io.Writer, r *Report, original io.Reader, maxFullSize int64) error {
	_, err := WriteInfo(w, r, original, maxFullSize)
	return err
}

// WriteInfo is Write, and it also says what it wrote: whether the DSN needs
// SMTPUTF8 or 8BITMIME to travel, and what of the original it returned.
func WriteInfo(w io.Writer, r *Report, original io.Reader, maxFullSize int64) (Info, error) {
	if err := r.validate(); err != nil {
		return Info{}, err
	}
	wantFull := strings.EqualFold(r.Return, "FULL") && r.has(Failed)
	// RFC 8689 section 5: for a REQUIRETLS message, RET=FULL is
	// disregarded and the report behaves as if RET=HDRS had been given.
	full := wantFull && maxFullSize > 0 && !r.RequireTLS
	orig, err := readOriginal(original, full, maxFullSize)
	if err != nil {
		return Info{}, fmt.Errorf("dsn: reading original message: %w", err)
	}
	if wantFull && r.RequireTLS && orig.returned == ReturnedHeaders {
		orig.notFull = notFullRequireTLS
	}
	global := r.UTF8 || r.hasUTF8Address() || orig.utf8Header

	info := Info{
		MessageID:  r.messageID(),
		Subject:    r.subject(),
		Global:     global,
		SMTPUTF8:   !isASCII(r.Sender) || !isASCII(r.ReportingMTA),
		Returned:   orig.returned,
		RequireTLS: r.RequireTLS,
	}
	text := humanText(r, orig)
	status := statusFields(r, global)

	var parts []part
	parts = append(parts, textPart(text))
	statusType := "message/delivery-status"
	if global {
		statusType = "message/global-delivery-status"
	}
	parts = append(parts, part{contentType: statusType, body: status})
	if orig.returned != ReturnedNothing {
		parts = append(parts, originalPart(orig, global))
	}
	for _, p := range parts {
		if !isASCII(string(p.body)) {
			info.EightBit = true
		}
	}
	boundary := newBoundary(parts)

	reportType := "delivery-status"
	if global {
		reportType = "global-delivery-status"
	}
	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	var h bytes.Buffer
	writeField(&h, "From", `"Mail Delivery System" <MAILER-DAEMON@`+clean(r.ReportingMTA)+">")
	writeField(&h, "To", "<"+clean(r.Sender)+">")
	writeField(&h, "Subject", info.Subject)
	writeField(&h, "Date", date.Format(time.RFC1123Z))
	writeField(&h, "Message-ID", "<"+info.MessageID+">")
	writeField(&h, "Auto-Submitted", "auto-replied")
	writeField(&h, "MIME-Version", "1.0")
	writeField(&h, "Content-Type", "multipart/report; report-type="+reportType+"; boundary=\""+boundary+"\"")
	if info.EightBit {
		writeField(&h, "Content-Transfer-Encoding", "8bit")
	}
	h.WriteString("\r\n")
	h.WriteString("This is a MIME-formatted delivery status notification.\r\n")

	if _, err := w.Write(h.Bytes()); err != nil {
		return info, err
	}
	for _, p := range parts {
		if err := p.writeTo(w, boundary); err != nil {
			return info, err
		}
	}
	if _, err := io.WriteString(w, "\r\n--"+boundary+"--\r\n"); err != nil {
		return info, err
	}
	return info, nil
}

// validate checks the fields Write cannot do without or cannot repair.
func (r *Report) validate() error {
	if r == nil {
		return errors.New("dsn: nil report")
	}
	if r.ReportingMTA == "" || strings.ContainsFunc(r.ReportingMTA, isSpaceOrControl) {
		return fmt.Errorf("dsn: reporting MTA %q is not a host name", r.ReportingMTA)
	}
	if r.Sender == "" {
		return ErrNullSender
	}
	if strings.ContainsFunc(r.Sender, isControl) {
		return fmt.Errorf("dsn: sender %q contains control characters", r.Sender)
	}
	if r.Return != "" && !strings.EqualFold(r.Return, "FULL") && !strings.EqualFold(r.Return, "HDRS") {
		return fmt.Errorf("dsn: return %q: must be FULL or HDRS", r.Return)
	}
	if len(r.Recipients) == 0 {
		return ErrNoRecipients
	}
	for i, rc := range r.Recipients {
		if strings.TrimSpace(rc.Final) == "" {
			return fmt.Errorf("dsn: recipient %d: no final recipient address", i)
		}
		if strings.ContainsFunc(rc.Final+rc.Original, isControl) {
			return fmt.Errorf("dsn: recipient %q: address contains control characters", rc.Final)
		}
		if !rc.Action.Valid() {
			return fmt.Errorf("dsn: recipient %q: unknown action %q", rc.Final, rc.Action)
		}
		if rc.Status != "" && !validStatus(rc.Status) {
			return fmt.Errorf("dsn: recipient %q: status %q is not an enhanced status code (like 5.1.1)", rc.Final, rc.Status)
		}
		if rc.Original != "" {
			if t, _, ok := strings.Cut(rc.Original, ";"); !ok || !isAtom(strings.TrimSpace(t)) {
				return fmt.Errorf("dsn: recipient %q: original recipient %q is not \"type;address\"", rc.Final, rc.Original)
			}
		}
	}
	return nil
}

// has reports whether any recipient has action a.
func (r *Report) has(a Action) bool {
	for _, rc := range r.Recipients {
		if rc.Action == a {
			return true
		}
	}
	return false
}

// hasUTF8Address reports whether any address of the report is non-ASCII.
func (r *Report) hasUTF8Address() bool {
	if !isASCII(r.Sender) {
		return true
	}
	for _, rc := range r.Recipients {
		if !isASCII(rc.Final) || !isASCII(rc.Original) {
			return true
		}
	}
	return false
}

// subject is the Subject for the most important action of the report:
// failures first, then delays, then successes.
func (r *Report) subject() string {
	switch {
	case r.has(Failed):
		return "Undelivered Mail Returned to Sender"
	case r.has(Delayed):
		return "Delayed Mail (still being retried)"
	case r.has(Delivered), r.has(Expanded):
		return "Successful Mail Delivery Report"
	default:
		return "Relayed Mail Delivery Report"
	}
}

// messageID returns the Message-ID to use, without angle brackets.
func (r *Report) messageID() string {
	if id := strings.TrimSuffix(strings.TrimPrefix(clean(r.MessageID), "<"), ">"); id != "" {
		return id
	}
	return rand.Text() + ".dsn@" + r.ReportingMTA
}

// validStatus reports whether s is an RFC 3463 status code: class "." subject
// "." detail, with class 2, 4 or 5 and up to three digits for the others.
func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.Contains("245", parts[0]) {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// defaultStatus is the generic status code for an action.
func defaultStatus(a Action) string {
	switch a {
	case Failed:
		return "5.0.0"
	case Delayed:
		return "4.0.0"
	}
	return "2.0.0"
}
