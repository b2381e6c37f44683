package resolver

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrInvalidName is wrapped by the *Error returned for a name that cannot be
// looked up: empty, too long, an empty label, a character that is not allowed
// or an internationalised label that IDNA rejects. It is a permanent error.
var ErrInvalidName = errors.New("invalid domain name")

// idnaProfile converts U-labels to A-labels the way a lookup should (RFC 5891
// section 5, UTS #46 mapping, non-transitional so that "ß" stays distinct),
// but allows '_' so that names such as "_25._tcp.mx.example" pass.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
)

// Limits of RFC 1035 section 2.3.4, in presentation form without the root dot.
const (
	maxNameLen  = 253
	maxLabelLen = 63
)

// canonicalName validates name and returns it lowercased, in A-label form and
// fully qualified (with the trailing dot), ready for a query. One trailing dot
// is accepted on input; "." alone (the root) is not a name we look up.
func canonicalName(name string) (string, error) {
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if !isASCII(n) {
		if !utf8.ValidString(n) {
			return "", fmt.Errorf("%w: not UTF-8", ErrInvalidName)
		}
		a, err := idnaProfile.ToASCII(n)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrInvalidName, err)
		}
		// The mapping may turn a full stop variant into a trailing dot.
		n = strings.TrimSuffix(a, ".")
	}
	n = strings.ToLower(n)
	if len(n) > maxNameLen {
		return "", fmt.Errorf("%w: longer than %d characters", ErrInvalidName, maxNameLen)
	}
	for label := range strings.SplitSeq(n, ".") {
		if err := checkLabel(label); err != nil {
			return "", err
		}
	}
	return n + ".", nil
}

// checkLabel accepts letters, digits, '-' and '_' (service labels such as
// "_25" and "_mta-sts" need the underscore) in a label of 1 to 63 octets.
func checkLabel(label string) error {
	if label == "" {
		return fmt.Errorf("%w: empty label", ErrInvalidName)
	}
	if len(label) > maxLabelLen {
		return fmt.Errorf("%w: label longer than %d characters", ErrInvalidName, maxLabelLen)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("%w: character %q not allowed", ErrInvalidName, c)
		}
	}
	return nil
}

// presentation returns a fully qualified name without its trailing dot, the
// form in which this package reports names.
func presentation(fqdn string) string {
	return strings.TrimSuffix(strings.ToLower(fqdn), ".")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
