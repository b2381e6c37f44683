package tlsupgrade

import "fmt"

// Level is the TLS requirement for one outbound connection.
//
//	level          | STARTTLS                   | no STARTTLS / refused / handshake fails | certificate
//	---------------+----------------------------+-----------------------------------------+------------------------
//	none           | never sent                 | plaintext                               | -
//	opportunistic  | sent when offered          | plaintext (same or new connection)      | checked, only recorded
//	required       | sent; must succeed         | error (temporary)                       | checked, only recorded
//
// The empty Level means opportunistic. Levels that make the certificate
// check decide (verify, mta-sts, dane) are meant to be added as further
// values, with their settings as further [Policy] fields.
type Level string

// The levels understood by this version.
const (
	// LevelNone never sends STARTTLS, even when the server offers it.
	LevelNone Level = "none"
	// LevelOpportunistic sends STARTTLS when offered and falls back to
	// plaintext when it is not offered, refused or fails. This is the
	// default.
	LevelOpportunistic Level = "opportunistic"
	// LevelRequired insists on a TLS session but does not require the
	// certificate to verify (Postfix's "encrypt").
	LevelRequired Level = "required"
)

// Validate reports whether l is a level this package knows. The empty level
// is valid and means [LevelOpportunistic].
func (l Level) Validate() error {
	switch l {
	case "", LevelNone, LevelOpportunistic, LevelRequired:
		return nil
	}
	return fmt.Errorf("unknown tls level %q (want %q, %q or %q)", string(l), LevelNone, LevelOpportunistic, LevelRequired)
}

// Policy is the TLS policy for one connection: a [Level] and, for the levels
// that check the certificate (to come), the settings they need, such as the
// names a certificate may carry or the TLSA records it must match.
type Policy struct {
	// Level is the TLS requirement. Default: opportunistic.
	Level Level
}

// Validate checks the policy as a whole.
func (p Policy) Validate() error {
	return p.Level.Validate()
}

// level returns the effective level.
func (p Policy) level() Level {
	if p.Level == "" {
		return LevelOpportunistic
	}
	return p.Level
}

// wantsTLS reports whether STARTTLS should be tried when offered.
func (p Policy) wantsTLS() bool {
	return p.level() != LevelNone
}

// requiresTLS reports whether a session without TLS is an error.
func (p Policy) requiresTLS() bool {
	return p.level() == LevelRequired
}

// checkPeer runs during the TLS handshake, after the certificate check has
// been recorded in res. A non-nil error aborts the handshake. None of the
// current levels rejects a certificate; "verify", "mta-sts" and "dane" will
// decide here (on res.Verified, or on TLSA matches) without a fallback to
// plaintext, since they all require TLS.
func (p Policy) checkPeer(res *Result) error {
	return nil
}
