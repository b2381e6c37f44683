package tlsupgrade

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/emersion/go-smtp"
)

// Summary says in a few words, on one line and without addresses or Go
// error chains, why the dial failed: "connection refused", "TLS
// certificate not trusted", "greeting: 421 4.3.2 busy". It is meant for
// DSNs and the queue's last reply; Error keeps the details for logs.
func (e *DialError) Summary() string {
	switch e.Stage {
	case StageOptions:
		return "invalid connection options"
	case StagePolicy:
		return "host not listed in the MTA-STS policy"
	case StageDial:
		return connectSummary(e.Err)
	case StageSTARTTLS, StageHandshake:
		if e.Result.Failure != "" {
			return failureSummary(e.Result.Failure)
		}
	}
	what := map[string]string{
		StageGreeting:  "greeting",
		StageEHLO:      "EHLO",
		StageSTARTTLS:  "STARTTLS",
		StageHandshake: "TLS handshake",
		StageTLSEHLO:   "EHLO after STARTTLS",
	}[e.Stage]
	if what == "" {
		what = "connection"
	}
	if se, ok := errors.AsType[*smtp.SMTPError](e.Err); ok {
		return what + ": " + truncate(formatReply(se), 200)
	}
	return what + " failed: " + connectSummary(e.Err)
}

// connectSummary names a network failure the way an administrator knows it.
func connectSummary(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "delivery cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	if dnsErr, ok := errors.AsType[*net.DNSError](err); ok {
		if dnsErr.IsNotFound {
			return "host name not found"
		}
		return "host name lookup failed"
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return "timed out"
	}
	return "connection error"
}

// failureSummary words an RFC 8460 result type.
func failureSummary(failure string) string {
	switch failure {
	case ResultSTARTTLSNotSupported:
		return "STARTTLS not offered, and the TLS policy requires it"
	case ResultCertificateHostMismatch:
		return "TLS certificate does not match the host name"
	case ResultCertificateExpired:
		return "TLS certificate expired"
	case ResultCertificateNotTrusted:
		return "TLS certificate not trusted"
	case ResultTLSAInvalid:
		return "TLS certificate does not match the TLSA records (DANE)"
	case ResultDNSSECInvalid:
		return "TLSA records not DNSSEC-valid (DANE)"
	case ResultDANERequired:
		return "no usable TLSA records, and DANE is required"
	case ResultSTSPolicyFetchError, ResultSTSPolicyInvalid, ResultSTSWebPKIInvalid:
		return "MTA-STS policy unusable"
	}
	return "TLS negotiation failed"
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "..."
}

// Summary words the policy failure for a DSN: "TLS certificate not trusted".
func (e *PolicyError) Summary() string { return failureSummary(e.ResultType) }
