package tlsupgrade

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Result says what happened to TLS on one connection, for logs, Received
// headers and metrics.
type Result struct {
	// Level is the effective policy level.
	Level Level
	// Offered reports whether the server advertised STARTTLS in its (first)
	// EHLO reply.
	Offered bool
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
	// roots and is valid for the server name. At the current levels it is
	// only recorded.
	Verified bool
	// VerifyError says why the certificate did not verify; empty when it did
	// or without TLS.
	VerifyError string
	// PeerName is the first DNS name of the server certificate (or its
	// common name when it has none), for logs.
	PeerName string
	// Fallback is empty, or says why the session ended in plaintext:
	// "tls disabled by policy", "starttls not offered",
	// "starttls refused: 454 4.7.0 ...", "starttls failed: ..." or
	// "handshake failed: ...". The last two mean the session runs on a second
	// connection.
	Fallback string
}

// Fallback reasons that have no details.
const (
	fallbackPolicy     = "tls disabled by policy"
	fallbackNotOffered = "starttls not offered"
)

// recordTLS fills the TLS fields of res from a connection state; the
// certificate fields are filled by recordPeer during the handshake.
func (res *Result) recordTLS(cs tls.ConnectionState) {
	res.TLS = true
	res.Version = VersionName(cs.Version)
	res.Cipher = tls.CipherSuiteName(cs.CipherSuite)
}

// recordPeer checks the server certificate of cs against roots (nil: the
// system roots) and name, and records the outcome in res. It never fails: the
// decision is the policy's.
func (res *Result) recordPeer(cs tls.ConnectionState, name string, roots *x509.CertPool) {
	res.Verified, res.VerifyError, res.PeerName = false, "", ""
	if len(cs.PeerCertificates) == 0 {
		res.VerifyError = "no server certificate"
		return
	}
	leaf := cs.PeerCertificates[0]
	res.PeerName = leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		res.PeerName = leaf.DNSNames[0]
	}
	if err := verifyChain(cs.PeerCertificates, name, roots, time.Now()); err != nil {
		res.VerifyError = err.Error()
		return
	}
	res.Verified = true
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
