package resolver

import (
	"errors"
	"fmt"

	"github.com/miekg/dns"
)

// ErrNullMX is wrapped by the permanent *Error that MXHosts returns for a
// domain that publishes a null MX (RFC 7505): it accepts no mail.
var ErrNullMX = errors.New("domain accepts no mail (null MX)")

// ErrNoMailHost is wrapped by the permanent *Error that MXHosts returns for a
// domain that exists but has neither MX records nor an address to use as its
// implicit MX (RFC 5321 section 5.1).
var ErrNoMailHost = errors.New("domain has no MX and no address records")

var (
	errNXDomain = errors.New("no such domain (NXDOMAIN)")
	errNoData   = errors.New("no records of this type")
)

// Error describes a failed lookup. Every error that this package returns is
// an *Error; use errors.As to get at it, or IsTemporary and IsNotFound.
type Error struct {
	// Name is the name that was looked up, lowercased and without the
	// trailing dot (as given when it could not be normalised).
	Name string
	// Type is the query type: "MX", "A", "AAAA", "TXT" or "TLSA".
	Type string
	// Server is the server (host:port) whose answer or failure decided the
	// result; empty when no server was asked.
	Server string
	// Rcode is the DNS response code of the answer that decided the result
	// (dns.RcodeNameError for NXDOMAIN, dns.RcodeSuccess for NODATA), or -1
	// when no server answered.
	Rcode int
	// Temporary reports a failure that may go away: SERVFAIL, REFUSED or any
	// other error code, timeouts, network errors and an ended context. A
	// mail sender defers on a temporary error and bounces on any other.
	Temporary bool
	// NotFound reports that the name does not exist (NXDOMAIN, Rcode 3) or
	// has no records of the type (NODATA, Rcode 0); also set with
	// ErrNoMailHost. It is never set together with Temporary.
	NotFound bool
	// Err is the cause: ErrInvalidName, ErrNullMX, ErrNoMailHost, a
	// context error, a network error or a description of the response code.
	Err error
}

// Error returns "lookup TYPE NAME[ on SERVER]: CAUSE".
func (e *Error) Error() string {
	s := "lookup " + e.Type + " " + e.Name
	if e.Server != "" {
		s += " on " + e.Server
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns the cause, so that errors.Is(err, ErrNullMX) and
// errors.Is(err, context.Canceled) work.
func (e *Error) Unwrap() error { return e.Err }

// IsTemporary reports whether err is a temporary lookup failure: retry later.
func IsTemporary(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Temporary
}

// IsNotFound reports whether err says that the name or its records do not
// exist (NXDOMAIN, NODATA, or a domain without any mail host).
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.NotFound
}

// rcodeError describes a response code that made us try the next server.
func rcodeError(rcode int) error {
	name, ok := dns.RcodeToString[rcode]
	if !ok {
		name = fmt.Sprintf("RCODE%d", rcode)
	}
	return fmt.Errorf("server answered %s", name)
}

// typeName returns the mnemonic of a query type, e.g. "MX".
func typeName(qtype uint16) string {
	return dns.Type(qtype).String()
}
