package tlsupgrade

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/caddy-smtp/caddy-smtp/resolver"
)

// Level is the TLS requirement for one outbound connection.
//
//	level          | STARTTLS           | no STARTTLS / refused / handshake fails | certificate
//	---------------+--------------------+-----------------------------------------+-----------------------------------
//	none           | never sent         | plaintext                               | -
//	opportunistic  | sent when offered  | plaintext (same or new connection)      | checked, only recorded
//	required       | sent; must succeed | error (temporary)                       | checked, only recorded
//	verify         | sent; must succeed | error (temporary)                       | must verify (PKIX) for ServerName
//	mta-sts        | sent; must succeed | error (temporary)                       | must verify (PKIX) for ServerName,
//	               |                    |                                         | which the MTA-STS policy must list
//	dane           | sent; must succeed | error (temporary)                       | must match the TLSA records
//
// The empty Level means opportunistic. The last two need data from DNS and
// HTTPS in the [Policy]; [SelectPolicy] picks the level for one MX host.
// None of the levels that require TLS falls back to plaintext.
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
	// LevelVerify insists on a TLS session with a certificate that chains
	// to Options.RootCAs (default: the system roots) and is valid for
	// Options.ServerName, the MX or relay host name (Postfix's "secure").
	LevelVerify Level = "verify"
	// LevelMTASTS enforces an MTA-STS policy (RFC 8461 section 4): the host
	// (Options.ServerName) must match one of the policy's mx patterns, and
	// the session must be TLS with a certificate that verifies for that
	// name, as at LevelVerify. Policy.MTASTS is required.
	LevelMTASTS Level = "mta-sts"
	// LevelDANE authenticates the server with its DNSSEC-signed TLSA
	// records (RFC 7672): TLS is mandatory and the certificate chain must
	// match one usable record of Policy.TLSA (see [DANEVerify]). When
	// every record is unusable, TLS is still mandatory but the certificate
	// is not checked (RFC 7672 section 2.2). Policy.TLSA is required.
	LevelDANE Level = "dane"
)

// levels lists the levels in the order the error message gives them.
var levels = []Level{LevelNone, LevelOpportunistic, LevelRequired, LevelVerify, LevelMTASTS, LevelDANE}

// Validate reports whether l is a level this package knows. The empty level
// is valid and means [LevelOpportunistic].
func (l Level) Validate() error {
	if l == "" {
		return nil
	}
	for _, known := range levels {
		if l == known {
			return nil
		}
	}
	return fmt.Errorf("unknown tls level %q (want one of %q)", string(l), levels)
}

// Policy is the TLS policy for one connection: a [Level] and the data the
// levels mta-sts and dane need. Use [SelectPolicy] to build it for an MX
// host from what DNS and MTA-STS said.
type Policy struct {
	// Level is the TLS requirement. Default: opportunistic.
	Level Level
	// MTASTS is the MTA-STS policy of the recipient domain. It is required
	// at LevelMTASTS, which enforces it whatever its mode. At the levels
	// none to verify a policy (in testing mode, as SelectPolicy attaches
	// it) is checked without consequences: what enforcing it would have
	// refused is recorded in [Result.Failure], the report of the testing
	// mode (RFC 8461 section 5). It is ignored at LevelDANE and in mode
	// "none".
	MTASTS *MTASTSPolicy
	// TLSA are the TLSA records of the host, from an authenticated answer
	// (the AD bit) for _25._tcp.<host>. Required at LevelDANE, ignored at
	// the other levels.
	TLSA []resolver.TLSA
	// DANENames are further names, besides Options.ServerName, that a
	// certificate may carry when a DANE-TA(2) record matched (RFC 7672
	// section 3.2.2): the TLSA base domain when it is the CNAME expansion
	// of the MX host name, or the recipient domain itself for a non-MX
	// destination.
	DANENames []string
}

// Validate checks the policy as a whole.
func (p Policy) Validate() error {
	if err := p.Level.Validate(); err != nil {
		return err
	}
	switch p.Level {
	case LevelMTASTS:
		if !p.MTASTS.active() {
			return errors.New("tls level mta-sts needs an MTA-STS policy in mode enforce or testing")
		}
	case LevelDANE:
		if len(p.TLSA) == 0 {
			return errors.New("tls level dane needs TLSA records")
		}
	}
	return nil
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
	switch p.level() {
	case LevelNone, LevelOpportunistic:
		return false
	}
	return true
}

// requiresPKIX reports whether the certificate must verify against the
// roots for the server name.
func (p Policy) requiresPKIX() bool {
	l := p.level()
	return l == LevelVerify || l == LevelMTASTS
}

// name returns what Result.Policy says.
func (p Policy) name() string {
	if p.sts() != nil {
		return string(LevelMTASTS)
	}
	return string(p.level())
}

// sts returns the MTA-STS policy the session is checked against, nil if
// none. DANE takes precedence over MTA-STS (RFC 8461 section 2).
func (p Policy) sts() *MTASTSPolicy {
	if p.level() != LevelDANE && p.MTASTS.active() {
		return p.MTASTS
	}
	return nil
}

// reportsFailures reports whether a shortfall of the session is a failure
// worth recording in Result.Failure: the levels that ask for more than
// opportunistic TLS, and the check against an MTA-STS policy in testing
// mode.
func (p Policy) reportsFailures() bool {
	return p.requiresTLS() || p.sts() != nil
}

// checkPeer runs during the TLS handshake, after the PKIX check of the
// certificate has been recorded in res (verifyErr is its error, nil when it
// verified). A non-nil error aborts the handshake; the failure is recorded in
// res. Only the levels that require TLS reject a certificate, so rejecting
// never leads to a plaintext fallback.
func (p Policy) checkPeer(cs tls.ConnectionState, serverName string, res *Result, verifyErr error) error {
	if p.level() == LevelDANE {
		if err := p.checkDANE(cs, serverName, res); err != nil {
			return err
		}
	}
	if verifyErr != nil && (p.requiresPKIX() || p.sts() != nil) {
		pe := &PolicyError{ResultType: certResultType(verifyErr), Err: verifyErr}
		res.fail(pe)
		if p.requiresPKIX() {
			return pe
		}
	}
	return nil
}

// checkDANE matches the presented chain against the TLSA records.
func (p Policy) checkDANE(cs tls.ConnectionState, serverName string, res *Result) error {
	names := append([]string{serverName}, p.DANENames...)
	err := DANEVerify(cs.PeerCertificates, p.TLSA, names...)
	switch {
	case err == nil:
		res.DANEVerified = true
		return nil
	case errors.Is(err, ErrNoUsableTLSA):
		// RFC 7672 section 2.2: TLS stays mandatory, without
		// authentication (DANEVerified stays false).
		return nil
	}
	pe := err.(*PolicyError) // DANEVerify's only other error
	res.fail(pe)
	return pe
}

// ErrMXNotInPolicy is the cause of a [PolicyError] (and of a [DialError] at
// [StagePolicy]) for an MX host that an MTA-STS policy in enforce mode does
// not list: mail must not go there (RFC 8461 section 4.1).
var ErrMXNotInPolicy = errors.New("MX host not listed in the MTA-STS policy")

// ErrDANERequired is the cause of the [PolicyError] that [SelectPolicy]
// returns when the configured level is dane and the host has no
// authenticated TLSA records.
var ErrDANERequired = errors.New("DANE required, but the host has no DNSSEC-authenticated TLSA records")

// ErrMTASTSRequired is the cause of the [PolicyError] that [SelectPolicy]
// returns when the configured level is mta-sts and the domain has no active
// MTA-STS policy.
var ErrMTASTSRequired = errors.New("MTA-STS required, but the domain has no MTA-STS policy in mode enforce or testing")

// Destination is what the delivery knows about one MX host when it picks
// the TLS policy for it with [SelectPolicy].
type Destination struct {
	// Configured is the operator's level for the destination (global, per
	// target or per domain); it applies when neither DANE nor an enforced
	// MTA-STS policy does. Configured dane means DANE is required: without
	// authenticated TLSA records the host is not used. Configured mta-sts
	// means the domain's MTA-STS policy is enforced even in testing mode,
	// and that a domain without one is not delivered to. Default:
	// opportunistic.
	Configured Level
	// MXAuthenticated reports whether the MX answer (for an implicit MX,
	// the NODATA answer) carried the AD bit, as resolver.MXHosts returns
	// it. DANE applies only to hosts taken from an authenticated MX RRset
	// (RFC 7672 section 2.2.1).
	MXAuthenticated bool
	// TLSA and TLSAAuthenticated are what resolver.LookupTLSA returned for
	// "_25._tcp." + the host. Records from an answer without the AD bit are
	// never used.
	TLSA              []resolver.TLSA
	TLSAAuthenticated bool
	// MTASTS is the policy of the recipient domain from
	// [MTASTSCache.Lookup]; nil when the domain has none.
	MTASTS *MTASTSPolicy
}

// SelectPolicy returns the Policy for delivering to host (an MX host name,
// or the domain itself for an implicit MX). The order is:
//
//  1. DANE (RFC 7672), when the MX answer and the TLSA answer were both
//     authenticated and there are TLSA records. DANE takes precedence over
//     MTA-STS (RFC 8461 section 2): the MTA-STS policy is not applied to a
//     host with DANE.
//  2. MTA-STS in enforce mode (RFC 8461 section 5): LevelMTASTS. A host that
//     the policy does not list gets an error instead: skip it.
//  3. The configured level, with an MTA-STS policy in testing mode attached
//     so that [Result.Failure] tells what enforcing it would have refused.
//
// The returned error is a *PolicyError (temporary: try the next host, and
// defer when none is left): ErrMXNotInPolicy, ErrDANERequired or
// ErrMTASTSRequired.
func SelectPolicy(host string, d Destination) (Policy, error) {
	if d.MXAuthenticated && d.TLSAAuthenticated && len(d.TLSA) > 0 {
		return Policy{Level: LevelDANE, TLSA: d.TLSA}, nil
	}
	if d.Configured == LevelDANE {
		return Policy{}, &PolicyError{ResultType: ResultDANERequired, Err: ErrDANERequired}
	}
	sts := d.MTASTS
	if !sts.active() {
		sts = nil
	}
	enforce := sts != nil && (sts.Mode == MTASTSEnforce || d.Configured == LevelMTASTS)
	switch {
	case enforce && !sts.Matches(host):
		return Policy{}, &PolicyError{ResultType: ResultValidationFailure, Err: ErrMXNotInPolicy}
	case enforce:
		return Policy{Level: LevelMTASTS, MTASTS: sts}, nil
	case d.Configured == LevelMTASTS:
		return Policy{}, &PolicyError{ResultType: ResultValidationFailure, Err: ErrMTASTSRequired}
	}
	return Policy{Level: d.Configured, MTASTS: sts}, nil
}

// PolicyError is a TLS policy that was not satisfied, with the RFC 8460
// result type that TLS-RPT reports it under.
type PolicyError struct {
	// ResultType is one of the Result* constants.
	ResultType string
	// Err is the cause.
	Err error
}

// Error returns "RESULT-TYPE: CAUSE".
func (e *PolicyError) Error() string { return e.ResultType + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *PolicyError) Unwrap() error { return e.Err }
