// Package queue holds what travels between an SMTP session and a delivery
// target: the message (envelope plus a body on disk) and the Target interface
// that every delivery destination implements. It knows nothing of Caddy.
package queue

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Message is one accepted message: its envelope and where its body lives.
type Message struct {
	// ID is a short unique identifier used in logs and the Received header.
	ID string
	// From is the envelope sender (reverse-path); empty for the null sender <>.
	From string
	// Recipients are the envelope recipients (forward-paths).
	Recipients []string
	// Arrived is when the message was accepted.
	Arrived time.Time
	// RequireTLS records the REQUIRETLS MAIL parameter (RFC 8689).
	RequireTLS bool
	// SMTPUTF8 records the SMTPUTF8 MAIL parameter (RFC 6531).
	SMTPUTF8 bool
	// Client describes the peer that handed us the message.
	Client ClientInfo

	// BodyPath is the file holding the complete message (headers and body,
	// CRLF line endings, our Received header first).
	BodyPath string
	// Size is the body size in bytes.
	Size int64
}

// ClientInfo describes the SMTP client a message came from.
type ClientInfo struct {
	Addr       string // remote IP address
	Helo       string // EHLO/HELO name
	TLSVersion string // e.g. "TLSv1.3"; empty for plaintext
	TLSCipher  string
	AuthUser   string // authenticated identity, if any
}

// OpenBody opens the message body for reading.
func (m *Message) OpenBody() (*os.File, error) {
	return os.Open(m.BodyPath)
}

// Target is a delivery destination. Deliver hands the message to the
// destination for the given recipients (a subset of m.Recipients) and returns
// one result per recipient, in the same order: nil means delivered and
// durably stored by the destination. A non-nil error should be a
// *DeliveryError saying whether the failure is temporary.
type Target interface {
	Deliver(ctx context.Context, m *Message, rcpts []string) []error
}

// DeliveryError is the outcome of a failed delivery to one recipient.
type DeliveryError struct {
	// Temporary failures are retried; permanent ones bounce.
	Temporary bool
	// Code and Enhanced are the SMTP reply code and enhanced status code
	// (e.g. 451 and "4.3.0") that describe the failure.
	Code     int
	Enhanced string
	// Message is a short description safe to show to the sender.
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
