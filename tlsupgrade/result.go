package tlsupgrade

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// Result says what happened to TLS on one connection, for logs, Received
// headers, metrics and TLS-RPT.
type Result struct {
	// Level is the effective level: the requirement that was enforced.
	Level Level
	// Policy names the policy that applied, for logs and metric labels:
	// "none", "opportunistic", "required", "verify", "mta-sts" or "dane".
	// It is the Level, except that an MTA-STS policy in testing mode
	// checked at another level makes it "mta-sts" (see Policy.MTASTS).
	Policy string
	// Offered reports whether the server advertised STARTTLS in its (first)
	// EHLO reply.
	Offered bool
	// Implicit reports a session that was TLS from the first byte
	// (Options.ImplicitTLS), with no STARTTLS.
	Implicit bool
	// TLS reports whether the session that was handed to the client is
	// encrypted.
	TLS bool
	// Version is the TLS version in Postfix's spelling ("TLSv1.3"), empty
	// without TLS.
	Version string
	// Cipher is the cipher suite name from [tls.CipherSuiteName], empty
	// without TLS.
	Cipher string
	// Verified reports whether the server certificate chains to the trusted
	// roots and is valid for the server name (PKIX). It is recorded at
	// every level; verify and mta-sts require it.
	Verified bool
	// VerifyError says why the certificate did not verify; empty when it did
	// or without TLS.
	VerifyError string
	// DANEVerified reports whether the certificate chain matched a usable
	// TLSA record of the policy (level dane).
	DANEVerified bool
	// PeerName is the first DNS name of the server certificate (or its
	// common name when it has none), for logs.
	PeerName string
	// Fallback is empty, or says why the session ended in plaintext:
	// "tls disabled by policy", "starttls not offered",
	// "starttls refused: 454 4.7.0 ...", "starttls failed: ..." or
	// "handshake failed: ...". The last two mean the session runs on a second
	// connection.
	Fallback string
	// Failure is empty when the session met the policy, and otherwise the
	// RFC 8460 result type of the first shortfall (one of the Result*
	// constants, e.g. "starttls-not-supported" or
	// "certificate-host-mismatch"). A shortfall that the level enforces
	// ends the Dial with an error whose [DialError.Result] carries it; one
	// that only an MTA-STS policy in testing mode would have refused lets
	// the session go on, and this is the failure to report. Always empty
	// at the levels none and opportunistic without an MTA-STS policy.
	Failure string
	// FailureReason says in words why Failure happened.
	FailureReason string
}

// PolicyType returns the TLS-RPT policy type of the session (RFC 8460
// section 4.4): "tlsa" for DANE, "sts" for MTA-STS, "no-policy-found"
// otherwise.
func (res Result) PolicyType() string {
	switch Level(res.Policy) {
	case LevelDANE:
		return PolicyTypeTLSA
	case LevelMTASTS:
		return PolicyTypeSTS
	}
	return PolicyTypeNoPolicy
}

// Fallback reasons that have no details.
const (
	fallbackPolicy     = "tls disabled by policy"
	fallbackNotOffered = "starttls not offered"
)

// fail records the first policy failure.
func (res *Result) fail(pe *PolicyError) {
	if res.Failure == "" {
		res.Failure, res.FailureReason = pe.ResultType, pe.Err.Error()
	}
}

// recordTLS fills the TLS fields of res from a connection state; the
// certificate fields are filled by recordPeer during the handshake.
func (res *Result) recordTLS(cs tls.ConnectionState) {
	res.TLS = true
	res.Version = VersionName(cs.Version)
	res.Cipher = CipherName(cs.CipherSuite)
}

// recordPeer checks the server certificate of cs against roots (nil: the
// system roots) and name, records the outcome in res and returns the error
// of the check. The decision is the policy's.
func (res *Result) recordPeer(cs tls.ConnectionState, name string, roots *x509.CertPool) error {
	res.Verified, res.VerifyError, res.PeerName = false, "", ""
	if len(cs.PeerCertificates) == 0 {
		err := errors.New("no server certificate")
		res.VerifyError = err.Error()
		return err
	}
	leaf := cs.PeerCertificates[0]
	res.PeerName = leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		res.PeerName = leaf.DNSNames[0]
	}
	if err := verifyChain(cs.PeerCertificates, name, roots, time.Now()); err != nil {
		res.VerifyError = err.Error()
		return err
	}
	res.Verified = true
	return nil
}

// certResultType classifies a failed certificate check with the RFC 8460
// result types.
func certResultType(err error) string {
	if errors.Is(err, errNoServerName) {
		return ResultCertificateHostMismatch
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return ResultCertificateHostMismatch
	}
	if ce, ok := errors.AsType[x509.CertificateInvalidError](err); ok && ce.Reason == x509.Expired {
		return ResultCertificateExpired
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return ResultCertificateNotTrusted
	}
	return ResultValidationFailure
}

// VerifyPeer checks the certificate chain of a completed handshake against
// roots (nil: the system roots) for name, as the level verify does: for a
// caller that wants to make sure of the peer before it sends a secret.
func VerifyPeer(cs tls.ConnectionState, name string, roots *x509.CertPool) error {
	if !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return errors.New("no completed TLS handshake with a server certificate")
	}
	return verifyChain(cs.PeerCertificates, normalizeServerName(name), roots, time.Now())
}

// errNoServerName is recorded when there is no name to check a certificate
// against (the destination was an IP literal and no ServerName was given).
var errNoServerName = errors.New("no server name to check the certificate against")

// verifyChain checks that chain[0] is valid at now for name (a DNS name or an
// IP address) and chains to roots through chain[1:].
func verifyChain(chain []*x509.Certificate, name string, roots *x509.CertPool, now time.Time) error {
	if name == "" {
		return errNoServerName
	}
	opts := x509.VerifyOptions{
		DNSName:     name,
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	_, err := chain[0].Verify(opts)
	return err
}

// VersionName spells a TLS version the way Postfix and OpenSSL log it:
// "TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1", and "TLS(0x0305)" for others.
// The server side can use it too, so that both directions log alike.
func VersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1"
	}
	return fmt.Sprintf("TLS(0x%04x)", v)
}

// cipherNames maps every cipher suite crypto/tls knows to its name.
var cipherNames = sync.OnceValue(func() map[uint16]string {
	m := make(map[uint16]string)
	for _, list := range [][]*tls.CipherSuite{tls.CipherSuites(), tls.InsecureCipherSuites()} {
		for _, c := range list {
			m[c.ID] = c.Name
		}
	}
	return m
})

// CipherName is [tls.CipherSuiteName] without its cost: that builds the
// list of all cipher suites on every call, and a name is needed for
// every message (logs, trace header, checks).
func CipherName(id uint16) string {
	if name, ok := cipherNames()[id]; ok {
		return name
	}
	return tls.CipherSuiteName(id)
}

// normalizeServerName strips the trailing dot of a DNS name (MX targets come
// out of DNS fully qualified) and the brackets of an IPv6 literal.
func normalizeServerName(name string) string {
	name = strings.TrimSuffix(name, ".")
	if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") {
		name = name[1 : len(name)-1]
	}
	return name
}

// sniName returns the name to send as SNI: none for IP addresses (RFC 6066).
func sniName(name string) string {
	if name == "" || net.ParseIP(name) != nil {
		return ""
	}
	return name
}
