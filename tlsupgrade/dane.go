package tlsupgrade

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddy-smtp/caddy-smtp/resolver"
)

// TLSA field values (RFC 6698, with the mnemonics of RFC 7218).
const (
	// TLSAUsageDANETA is certificate usage 2: the record matches a trust
	// anchor that must be in the chain the server presents.
	TLSAUsageDANETA uint8 = 2
	// TLSAUsageDANEEE is certificate usage 3: the record matches the
	// server certificate itself.
	TLSAUsageDANEEE uint8 = 3

	// TLSASelectorCert selects the whole certificate (DER).
	TLSASelectorCert uint8 = 0
	// TLSASelectorSPKI selects the SubjectPublicKeyInfo (DER).
	TLSASelectorSPKI uint8 = 1

	// TLSAMatchFull compares the selected data itself.
	TLSAMatchFull uint8 = 0
	// TLSAMatchSHA256 compares its SHA-256 digest.
	TLSAMatchSHA256 uint8 = 1
	// TLSAMatchSHA512 compares its SHA-512 digest.
	TLSAMatchSHA512 uint8 = 2
)

// ErrNoUsableTLSA is returned by [DANEVerify] when none of the records is
// usable. RFC 7672 section 2.2 then still wants TLS, but without
// authentication (what LevelDANE does); it is not a verification failure.
var ErrNoUsableTLSA = errors.New("no usable TLSA records")

// UsableTLSA returns the records that DANE for SMTP uses (RFC 7672 section
// 3.1), in their order:
//
//   - usages DANE-TA(2) and DANE-EE(3); PKIX-TA(0) and PKIX-EE(1) are
//     unusable for SMTP (RFC 7672 section 3.1.3), and so are unknown usages;
//   - selectors Cert(0) and SPKI(1), matching types Full(0), SHA2-256(1) and
//     SHA2-512(2), with data of the right length for the digest;
//   - digest algorithm agility (RFC 7671 section 9): where SHA2-512 records
//     exist for a usage and selector, the SHA2-256 records of that usage and
//     selector are ignored, so that a weaker digest cannot stand in for a
//     stronger one. Full(0) records are always used.
func UsableTLSA(recs []resolver.TLSA) []resolver.TLSA {
	type key struct{ usage, selector uint8 }
	strong := make(map[key]bool)
	var usable []resolver.TLSA
	for _, r := range recs {
		if !usableTLSA(r) {
			continue
		}
		usable = append(usable, r)
		if r.MatchingType == TLSAMatchSHA512 {
			strong[key{r.Usage, r.Selector}] = true
		}
	}
	kept := usable[:0]
	for _, r := range usable {
		if r.MatchingType == TLSAMatchSHA256 && strong[key{r.Usage, r.Selector}] {
			continue
		}
		kept = append(kept, r)
	}
	return kept
}

// usableTLSA checks one record's parameters.
func usableTLSA(r resolver.TLSA) bool {
	if r.Usage != TLSAUsageDANETA && r.Usage != TLSAUsageDANEEE {
		return false
	}
	if r.Selector != TLSASelectorCert && r.Selector != TLSASelectorSPKI {
		return false
	}
	switch r.MatchingType {
	case TLSAMatchFull:
		return len(r.Data) > 0
	case TLSAMatchSHA256:
		return len(r.Data) == sha256.Size
	case TLSAMatchSHA512:
		return len(r.Data) == sha512.Size
	}
	return false
}

// DANEVerify checks a certificate chain as the server presented it (leaf
// first) against TLSA records (RFC 7672 section 3), and returns nil when one
// usable record matches:
//
//   - DANE-EE(3): the record matches the leaf certificate. Nothing else is
//     checked: neither names nor dates (RFC 7672 section 3.1.1).
//   - DANE-TA(2): the record matches a certificate of the presented chain
//     (RFC 7672 section 3.1.2 requires the server to include its trust
//     anchor), the leaf chains up to that certificate through the ones
//     presented between them and is valid now, and the leaf carries one of
//     names (RFC 7672 section 3.2.2: the MX host name and the TLSA base
//     domain when they differ). Names are the DNS subjectAltNames of the
//     leaf, or its subject common name when it has none (RFC 7672 section
//     3.2.3); a wildcard "*." stands for exactly one leftmost label.
//
// With no usable record (see [UsableTLSA]) the error is ErrNoUsableTLSA.
// Otherwise a failure is a *PolicyError whose ResultType is
// "certificate-host-mismatch", "certificate-expired" or
// "certificate-not-trusted" when a DANE-TA record matched but the rest did
// not hold, and "tlsa-invalid" when no record matched.
func DANEVerify(chain []*x509.Certificate, recs []resolver.TLSA, names ...string) error {
	usable := UsableTLSA(recs)
	if len(usable) == 0 {
		return ErrNoUsableTLSA
	}
	if len(chain) == 0 {
		return &PolicyError{ResultType: ResultTLSAInvalid, Err: errors.New("no server certificate")}
	}
	for _, r := range usable {
		if r.Usage == TLSAUsageDANEEE && tlsaMatches(r, chain[0]) {
			return nil
		}
	}
	var taErr error
	for i, c := range chain {
		for _, r := range usable {
			if r.Usage != TLSAUsageDANETA || !tlsaMatches(r, c) {
				continue
			}
			err := verifyToAnchor(chain, i, names, time.Now())
			if err == nil {
				return nil
			}
			if taErr == nil {
				taErr = err
			}
		}
	}
	if taErr != nil {
		return taErr
	}
	return &PolicyError{ResultType: ResultTLSAInvalid,
		Err: fmt.Errorf("the certificate chain matches none of %d usable TLSA records", len(usable))}
}

// tlsaMatches reports whether r matches the certificate c.
func tlsaMatches(r resolver.TLSA, c *x509.Certificate) bool {
	data := c.Raw
	if r.Selector == TLSASelectorSPKI {
		data = c.RawSubjectPublicKeyInfo
	}
	switch r.MatchingType {
	case TLSAMatchSHA256:
		sum := sha256.Sum256(data)
		data = sum[:]
	case TLSAMatchSHA512:
		sum := sha512.Sum512(data)
		data = sum[:]
	}
	return bytes.Equal(data, r.Data)
}

// verifyToAnchor checks that chain[0] chains up to chain[anchor] through
// chain[1:anchor], is valid at now, and carries one of names.
func verifyToAnchor(chain []*x509.Certificate, anchor int, names []string, now time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(chain[anchor])
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		// Mail servers' certificates often lack the serverAuth EKU;
		// DANE does not ask for it.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, c := range chain[1:max(anchor, 1)] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(opts); err != nil {
		return &PolicyError{ResultType: certResultType(err), Err: fmt.Errorf("DANE-TA: %w", err)}
	}
	if !certHasName(chain[0], names) {
		return &PolicyError{ResultType: ResultCertificateHostMismatch,
			Err: fmt.Errorf("DANE-TA: the certificate is valid for %q, not %q", certNames(chain[0]), names)}
	}
	return nil
}

// certNames returns the DNS names a certificate is issued to: its DNS
// subjectAltNames, or its subject common name when it has none.
func certNames(c *x509.Certificate) []string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames
	}
	if c.Subject.CommonName != "" {
		return []string{c.Subject.CommonName}
	}
	return nil
}

// certHasName reports whether c is issued to one of names.
func certHasName(c *x509.Certificate, names []string) bool {
	for _, pattern := range certNames(c) {
		for _, name := range names {
			if name != "" && matchHostPattern(pattern, name) {
				return true
			}
		}
	}
	return false
}

// matchHostPattern matches a host name against a name or a pattern whose
// leftmost label is "*", which stands for exactly one non-empty label (RFC
// 6125 section 6.4.3, as RFC 8461 section 4.1 and RFC 7672 section 3.2.3 use
// it). The comparison ignores case and a trailing dot.
func matchHostPattern(pattern, host string) bool {
	pattern = strings.ToLower(strings.TrimSuffix(pattern, "."))
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if parent, ok := strings.CutPrefix(pattern, "*."); ok {
		label, rest, ok := strings.Cut(host, ".")
		return ok && label != "" && label != "*" && rest == parent
	}
	return pattern != "" && pattern == host
}
