package tlsupgrade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// The stages of [Dial], as reported in [DialError.Stage].
const (
	// StageOptions: the Options were invalid; nothing was sent.
	StageOptions = "options"
	// StagePolicy: the policy forbids this host (an MTA-STS policy in
	// enforce mode does not list it); nothing was sent. The cause is a
	// *PolicyError wrapping ErrMXNotInPolicy.
	StagePolicy = "policy"
	// StageDial: the TCP connection could not be made.
	StageDial = "dial"
	// StageGreeting: no 220 greeting (another code, a timeout, a closed
	// connection).
	StageGreeting = "greeting"
	// StageEHLO: EHLO (and HELO, for servers without EHLO) failed on the
	// plaintext session.
	StageEHLO = "ehlo"
	// StageSTARTTLS: STARTTLS was not offered, was refused or its reply was
	// unusable, and the policy requires TLS.
	StageSTARTTLS = "starttls"
	// StageHandshake: the TLS handshake failed and the policy requires TLS.
	StageHandshake = "handshake"
	// StageTLSEHLO: the EHLO repeated over TLS failed.
	StageTLSEHLO = "tls_ehlo"
)

// ErrSTARTTLSNotOffered is the cause of a [DialError] when the policy requires
// TLS and the server did not advertise STARTTLS.
var ErrSTARTTLSNotOffered = errors.New("STARTTLS not offered")

// DialError is the error returned by [Dial]. Replies from the server are
// *smtp.SMTPError values in the chain (use errors.As); a cancelled or expired
// context is in the chain as ctx.Err().
//
// Temporary is true for everything that happens on the wire: connection
// refused, reset or timed out, any reply code at the greeting, EHLO or
// STARTTLS, handshake failures (a certificate rejected by the policy
// included), TLS required but not available (as Postfix defers at its
// "encrypt" level) and a host refused by an MTA-STS policy (RFC 8461 section
// 4.2: no permanent failure before the policy has been looked up again). In
// particular a 5xx greeting such as "554 no SMTP service here" is temporary:
// it speaks for this host only, so the caller should try the next MX and
// otherwise retry later, the way Postfix does with smtp_skip_5xx_greeting
// (its default). Only invalid Options are not temporary.
type DialError struct {
	// Addr is the address that was dialled.
	Addr string
	// Stage is where the dial failed: one of the Stage constants.
	Stage string
	// Fallback is set when the error happened on the plaintext
	// reconnection: it says why TLS was given up (see [Result.Fallback]).
	Fallback string
	// Temporary reports whether the delivery should be retried later.
	Temporary bool
	// Err is the cause.
	Err error
	// Result is what had happened to TLS when the dial failed; its Failure
	// says (as an RFC 8460 result type) how the policy was not met, e.g.
	// "starttls-not-supported" at a level that requires TLS.
	Result Result
}

// Error formats the error as "tlsupgrade: ADDR: STAGE: CAUSE", with server
// replies written the way they came ("554 5.7.1 go away").
func (e *DialError) Error() string {
	var b strings.Builder
	b.WriteString("tlsupgrade: ")
	if e.Addr != "" {
		b.WriteString(e.Addr)
		b.WriteString(": ")
	}
	b.WriteString(e.Stage)
	if e.Fallback != "" {
		b.WriteString(" (plaintext retry after ")
		b.WriteString(e.Fallback)
		b.WriteString(")")
	}
	b.WriteString(": ")
	if se, ok := e.Err.(*smtp.SMTPError); ok {
		b.WriteString(formatReply(se))
	} else {
		b.WriteString(fmt.Sprint(e.Err))
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *DialError) Unwrap() error { return e.Err }

// IsTemporary reports whether err, returned by [Dial] or by the Client of a
// [Conn], means "try again later" rather than "this will never work": a
// temporary [DialError], a 4xx *smtp.SMTPError, a network error, an
// unexpected end of the connection or an ended context. 5xx replies and
// local errors (bad options, an address with a line break) are not temporary.
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	if de, ok := errors.AsType[*DialError](err); ok {
		return de.Temporary
	}
	if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
		return se.Code/100 == 4
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// replyError turns a *textproto.Error (an unexpected reply code) into an
// *smtp.SMTPError, as go-smtp's Client does, and leaves other errors alone.
func replyError(err error) error {
	if te, ok := errors.AsType[*textproto.Error](err); ok {
		return parseReply(te.Code, te.Msg)
	}
	return err
}

// parseReply splits an RFC 2034 enhanced status code off the text of a reply
// (from every line, where the server repeated it).
func parseReply(code int, msg string) *smtp.SMTPError {
	se := &smtp.SMTPError{Code: code, Message: msg}
	first, rest, ok := strings.Cut(msg, " ")
	if !ok {
		return se
	}
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return se
	}
	var ec smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return se
		}
		ec[i] = n
	}
	se.EnhancedCode = ec
	se.Message = strings.ReplaceAll(rest, "\n"+first+" ", "\n")
	return se
}

// formatReply writes a reply on one line the way it came: "454 4.7.0 TLS not
// available".
func formatReply(se *smtp.SMTPError) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(se.Code))
	if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
		fmt.Fprintf(&b, " %d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	if se.Message != "" {
		b.WriteString(" ")
		b.WriteString(strings.ReplaceAll(se.Message, "\n", " "))
	}
	return b.String()
}
