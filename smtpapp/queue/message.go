// Package queue is the durable mail queue: a spool that keeps every accepted
// message on disk until each of its recipients is delivered or bounced, and
// a scheduler that hands due messages to delivery targets, reusing
// connections, retrying with backoff and returning failures to the sender
// as DSNs. It knows nothing of Caddy's configuration.
package queue

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/headerfilter"
)

// Message is one queued message: its envelope and per-recipient state. It is
// what the spool stores next to the body (as JSON) and what targets read.
type Message struct {
	// ID is a short unique identifier used in logs and the Received header.
	ID string `json:"id"`
	// From is the envelope sender (reverse-path); empty for the null sender <>.
	From string `json:"from"`
	// Recipients are the envelope recipients with their delivery state.
	Recipients []*Recipient `json:"rcpts"`
	// Arrived is when the message was accepted.
	Arrived time.Time `json:"arrived"`
	// RequireTLS records the REQUIRETLS MAIL parameter (RFC 8689).
	RequireTLS bool `json:"require_tls,omitempty"`
	// SMTPUTF8 records the SMTPUTF8 MAIL parameter (RFC 6531).
	SMTPUTF8 bool `json:"smtputf8,omitempty"`
	// TLSOptional records a "TLS-Required: No" header field (RFC 8689
	// section 5): the sender prefers delivery over TLS policy. Never set
	// together with RequireTLS.
	TLSOptional bool `json:"tls_optional,omitempty"`
	// Body is the BODY MAIL parameter: "7BIT", "8BITMIME" or "" (not given).
	Body string `json:"body,omitempty"`
	// Ret and EnvID are the DSN MAIL parameters RET (FULL or HDRS) and
	// ENVID (RFC 3461).
	Ret   string `json:"ret,omitempty"`
	EnvID string `json:"envid,omitempty"`
	// Client describes the peer that handed us the message.
	Client ClientInfo `json:"client"`
	// Server names the SMTP server that accepted the message; its routes
	// decide where the message goes.
	Server string `json:"server,omitempty"`
	// Size is the body size in bytes.
	Size int64 `json:"size"`
	// MessageID is the Message-ID header field's value (for the logs),
	// "" when it has none.
	MessageID string `json:"message_id,omitempty"`
	// Attempts counts delivery attempts so far.
	Attempts int `json:"attempts,omitempty"`
	// NextAttempt is when the message is next due.
	NextAttempt time.Time `json:"next_attempt,omitempty"`
	// Requeued is when an administrator last requeued the message: its
	// retry backoff counts from then, its maximum age still from Arrived.
	Requeued time.Time `json:"requeued,omitzero"`
	// Held is set while an administrator holds the message: it is not
	// delivered (and does not expire) until released.
	Held bool `json:"held,omitempty"`
	// Headers are header fields (each ending in CRLF) that go before the
	// stored data when the message is read: those the checks wrote at the
	// end of DATA, such as Authentication-Results.
	Headers string `json:"headers,omitempty"`
	// DropHeaders names header fields (any case) that are left out of the
	// stored data when the message is read: those a check replaced, such
	// as a rewritten Subject (the new field is in Headers).
	DropHeaders []string `json:"drop_headers,omitempty"`
	// Checks are the results of the checks that judged the message.
	Checks []CheckResult `json:"checks,omitempty"`
	// DoubleBounce marks a report to the postmaster about mail from the
	// null sender that could not be delivered (a failed DSN): its own
	// failure is never reported.
	DoubleBounce bool `json:"double_bounce,omitempty"`
	// Quarantine is set when a check quarantined the message: it is then
	// kept Held until an administrator releases or deletes it, or until
	// Config.QuarantineRetention has passed. It stays after a release, as
	// history, with its Released time.
	Quarantine *Quarantine `json:"quarantine,omitempty"`

	store Store // set by the Queue (New, Commit) for OpenBody
}

// CheckResult is what one check said about a message.
type CheckResult struct {
	// Check is the check's name, such as "spf".
	Check string `json:"check"`
	// Verdict is what it decided: accept, allow, quarantine, ...
	Verdict string `json:"verdict"`
	// Result is its short summary, such as "pass" or "fail".
	Result string `json:"result,omitempty"`
}

// Quarantine says why a message was quarantined.
type Quarantine struct {
	// Check is the check that quarantined the message.
	Check string `json:"check"`
	// Reason is the check's reason.
	Reason string `json:"reason,omitempty"`
	// At is when the message was quarantined.
	At time.Time `json:"at"`
	// Released is when an administrator released the message; zero while
	// it is quarantined.
	Released time.Time `json:"released,omitzero"`
}

// ClientInfo describes the SMTP client a message came from.
type ClientInfo struct {
	Addr       string `json:"addr,omitempty"`        // remote IP address
	Helo       string `json:"helo,omitempty"`        // EHLO/HELO name
	TLSVersion string `json:"tls_version,omitempty"` // e.g. "TLSv1.3"; empty for plaintext
	TLSCipher  string `json:"tls_cipher,omitempty"`
	AuthUser   string `json:"auth_user,omitempty"` // authenticated identity, if any
}

// Recipient is one envelope recipient and where its delivery stands.
type Recipient struct {
	// Addr is the forward-path address.
	Addr string `json:"addr"`
	// ORCPT and Notify are the DSN RCPT parameters (RFC 3461); ORCPT is kept
	// as "type;address" (e.g. "rfc822;a@example.com").
	ORCPT  string   `json:"orcpt,omitempty"`
	Notify []string `json:"notify,omitempty"`
	// Status is pending until the recipient is delivered or failed.
	Status Status `json:"status,omitempty"`
	// LastReply is the last reply or error for this recipient
	// ("451 4.4.1 connection refused"), for logs and DSNs.
	LastReply string `json:"last_reply,omitempty"`
	// RemoteMTA is the host that gave LastReply, if any.
	RemoteMTA string `json:"remote_mta,omitempty"`
	// Enhanced is the enhanced status code of the last failure ("5.1.1").
	Enhanced string `json:"enhanced,omitempty"`
	// Action is the DSN action of a delivered recipient: "delivered"
	// (final delivery), "relayed" (handed to a next hop without DSN
	// support) or "" (the next hop took over DSN duties).
	Action string `json:"action,omitempty"`
	// DSNPending is set while a DSN for this recipient is owed to the
	// sender.
	DSNPending bool `json:"dsn_pending,omitempty"`
	// DelayReported is set once a delayed DSN (RFC 3464 action=delayed)
	// went to the sender for this recipient.
	DelayReported bool `json:"delay_reported,omitempty"`
	// DoubleBounceSeen marks the failure of a null-sender message that
	// was logged as dropped (no postmaster to report it to).
	DoubleBounceSeen bool `json:"double_bounce_seen,omitempty"`
}

// Status is a recipient's delivery state.
type Status string

// Recipient states.
const (
	Pending   Status = ""          // to be delivered
	Delivered Status = "delivered" // accepted by the destination
	Failed    Status = "failed"    // permanently failed (bounced)
)

// OpenBody opens the message for reading: its Headers, then the data
// stored.
func (m *Message) OpenBody() (io.ReadCloser, error) {
	if m.store == nil {
		return nil, errors.New("queue: message has no store")
	}
	return openWithHeaders(m.store, m.ID, m.Headers, m.DropHeaders)
}

// openWithHeaders opens a stored body behind the given header fields,
// without the fields named in drop.
func openWithHeaders(s BodyOpener, id, headers string, drop []string) (io.ReadCloser, error) {
	rc, err := s.OpenBody(id)
	if err != nil || headers == "" && len(drop) == 0 {
		return rc, err
	}
	var stored io.Reader = rc
	if len(drop) > 0 {
		stored = headerfilter.NewReader(rc, func(name string) bool {
			return slices.ContainsFunc(drop, func(d string) bool { return strings.EqualFold(d, name) })
		}, func([]byte) bool { return true })
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(strings.NewReader(headers), stored), rc}, nil
}

// DataSize is the size of the message as OpenBody reads it: the stored
// data and the Headers.
func (m *Message) DataSize() int64 { return m.Size + int64(len(m.Headers)) }

// Pending returns the recipients still to be delivered.
func (m *Message) Pending() []*Recipient {
	var out []*Recipient
	for _, r := range m.Recipients {
		if r.Status == Pending {
			out = append(out, r)
		}
	}
	return out
}

// Target is a delivery destination kind (a Maildir, a relay host, MX
// delivery). Recipients that share a destination key can go over one
// session (one SMTP connection), one message after the other.
type Target interface {
	// Destination returns the key of the destination for a recipient of
	// a message, e.g. its domain for MX delivery, or "" when all
	// recipients go to the same place. Messages that need a different
	// kind of session (another TLS policy) get another key.
	Destination(m *Message, rcpt string) string
	// Open starts a delivery session to a destination. An error means no
	// message can be delivered there now; it should be a *DeliveryError.
	Open(ctx context.Context, dest string) (Session, error)
}

// Session delivers messages to one destination, one after the other.
type Session interface {
	// Deliver hands a message to the destination for the given recipients
	// and returns one result per recipient, in order.
	Deliver(ctx context.Context, m *Message, rcpts []*Recipient) []Result
	// LogFields describe the session (host, TLS) for the delivery log.
	LogFields() []zap.Field
	// Usable reports whether the session can take another message.
	Usable() bool
	// Close ends the session.
	Close() error
}

// Result is the outcome of a delivery to one recipient.
type Result struct {
	// Err is nil when the destination accepted the message for the
	// recipient; otherwise a *DeliveryError (other errors count as
	// temporary).
	Err error
	// Reply is the destination's reply, e.g. "250 2.0.0 Ok: queued as X".
	Reply string
	// RemoteMTA is the host that replied ("" for local targets).
	RemoteMTA string
	// Action says who reports on the message from here on: "delivered"
	// for a final delivery, "relayed" for a next hop without DSN support,
	// "" when the next hop took the DSN parameters over.
	Action string
}

// DeliveryError is the outcome of a failed delivery.
type DeliveryError struct {
	// Temporary failures are retried; permanent ones bounce.
	Temporary bool
	// Code and Enhanced are the SMTP reply code and enhanced status code
	// (e.g. 451 and "4.3.0") that describe the failure.
	Code     int
	Enhanced string
	// Message is a short description, safe to show to the sender.
	Message string
	// Err is the underlying cause, for logs.
	Err error
}

func (e *DeliveryError) Error() string {
	s := fmt.Sprintf("%d %s %s", e.Code, e.Enhanced, e.Message)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// TempFail wraps a local error as a temporary (4.3.0) delivery failure.
func TempFail(msg string, err error) *DeliveryError {
	return &DeliveryError{Temporary: true, Code: 451, Enhanced: "4.3.0", Message: msg, Err: err}
}

// IsTemporary reports whether err is a temporary delivery failure. Errors
// that are not *DeliveryError are treated as temporary: an unknown failure
// must never lose mail.
func IsTemporary(err error) bool {
	var de *DeliveryError
	if errors.As(err, &de) {
		return de.Temporary
	}
	return err != nil
}

// NewID returns a new random message ID: 16 characters of base32.
func NewID() string {
	var b [10]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		panic("queue: crypto/rand failed: " + err.Error())
	}
	return strings.ToUpper(base32.StdEncoding.EncodeToString(b[:]))
}

// ValidID reports whether id is a message ID a store accepts: the IDs NewID
// makes, or any 1 to 64 letters, digits, '-' and '_' (nothing with path
// syntax, so a store may use the ID as a file name).
func ValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Domain returns the lowercased domain part of an address (after the last
// '@'), without a trailing dot; "" if there is none.
func Domain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(addr[i+1:]), ".")
}

// LocalPart returns the part of an address before the last '@'.
func LocalPart(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr
	}
	return addr[:i]
}

// Errors are several errors met in one attempt (one per host tried): they
// print joined by "; " and errors.As finds each.
type Errors []error

func (e Errors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

// Unwrap returns the errors, for errors.Is and errors.As.
func (e Errors) Unwrap() []error { return e }
