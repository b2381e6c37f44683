package tlsupgrade

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MTASTSMode is the mode of an MTA-STS policy (RFC 8461 section 5).
//
//	mode    | a host that the policy does not list, or no verified TLS
//	--------+----------------------------------------------------------
//	enforce | no delivery to that host
//	testing | delivery as without the policy; the failure is reported
//	none    | as if the domain had no policy
type MTASTSMode string

// The modes of RFC 8461 section 3.2.
const (
	MTASTSEnforce MTASTSMode = "enforce"
	MTASTSTesting MTASTSMode = "testing"
	MTASTSNone    MTASTSMode = "none"
)

// MaxMTASTSMaxAge is the largest max_age a policy may have: 31557600 seconds,
// about a year (RFC 8461 section 3.2).
const MaxMTASTSMaxAge = 31557600 * time.Second

// MTASTSPolicy is an MTA-STS policy (RFC 8461 section 3.2), as served at
// https://mta-sts.<domain>/.well-known/mta-sts.txt.
type MTASTSPolicy struct {
	// Version is "STSv1".
	Version string
	// Mode is enforce, testing or none.
	Mode MTASTSMode
	// MX are the patterns of the allowed MX hosts: host names, or "*."
	// and a name for any host exactly one label below it. They are
	// lowercased. At least one unless the mode is none.
	MX []string
	// MaxAge is how long the policy may be cached after it was fetched.
	MaxAge time.Duration
}

// active reports whether p is a policy that senders apply: not nil and not
// in mode none.
func (p *MTASTSPolicy) active() bool {
	return p != nil && (p.Mode == MTASTSEnforce || p.Mode == MTASTSTesting)
}

// Matches reports whether mxHost matches one of the policy's mx patterns
// (RFC 8461 section 4.1): equal, ignoring case and a trailing dot, or one
// label followed by the name of a "*." pattern ("*.example.com" matches
// "mx1.example.com", not "example.com" nor "a.b.example.com").
func (p *MTASTSPolicy) Matches(mxHost string) bool {
	if p == nil {
		return false
	}
	for _, pattern := range p.MX {
		if matchHostPattern(pattern, mxHost) {
			return true
		}
	}
	return false
}

// String returns the policy in its file format, with CRLF line ends.
func (p *MTASTSPolicy) String() string {
	return strings.Join(p.PolicyStrings(), "\r\n") + "\r\n"
}

// PolicyStrings returns the policy as the lines of its file format, the
// "policy-string" of a TLS-RPT report (RFC 8460 section 4.4: one "mx" entry
// per pattern).
func (p *MTASTSPolicy) PolicyStrings() []string {
	lines := []string{"version: " + p.Version, "mode: " + string(p.Mode)}
	for _, mx := range p.MX {
		lines = append(lines, "mx: "+mx)
	}
	return append(lines, "max_age: "+strconv.FormatInt(int64(p.MaxAge/time.Second), 10))
}

// maxMTASTSPolicySize is the largest policy file a sender accepts (RFC 8461
// section 3.3: 64 KiB).
const maxMTASTSPolicySize = 64 << 10

// ParseMTASTSPolicy parses a policy file strictly after the grammar of RFC
// 8461 section 3.2:
//
//   - lines end with CRLF or LF; the last line end is optional, and no line
//     may be empty;
//   - each line is "key:" then optional spaces or tabs, then the value, then
//     optional spaces or tabs; keys and the values of the fields below are
//     case-sensitive;
//   - "version" must be "STSv1", "mode" one of enforce, testing and none,
//     "max_age" 1 to 10 digits with a value of at most 31557600, "mx" a
//     domain name (letters, digits, hyphens) optionally preceded by "*.";
//     version, mode and max_age must be present, and at least one mx unless
//     the mode is none;
//   - other keys are extensions: a name of 1 to 32 letters, digits, "_", "-"
//     and "." starting with a letter or digit, and a value of printable
//     characters (UTF-8 allowed); they are ignored;
//   - a field other than mx that appears more than once keeps its first
//     value (RFC 8461 section 3.2).
//
// The grammar puts no order on the fields; the example of RFC 8461 starts
// with version, and so does String.
func ParseMTASTSPolicy(b []byte) (*MTASTSPolicy, error) {
	if len(b) > maxMTASTSPolicySize {
		return nil, fmt.Errorf("mta-sts policy: larger than %d bytes", maxMTASTSPolicySize)
	}
	if !utf8.Valid(b) {
		return nil, errors.New("mta-sts policy: not UTF-8")
	}
	text := strings.TrimSuffix(string(b), "\n")
	var (
		p                   MTASTSPolicy
		haveMode, haveMaxAg bool
	)
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		key, value, err := policyField(line)
		if err != nil {
			return nil, fmt.Errorf("mta-sts policy: line %d: %w", i+1, err)
		}
		switch key {
		case "version":
			if value != "STSv1" {
				return nil, fmt.Errorf("mta-sts policy: line %d: version %q, want STSv1", i+1, value)
			}
			p.Version = value
		case "mode":
			m := MTASTSMode(value)
			if m != MTASTSEnforce && m != MTASTSTesting && m != MTASTSNone {
				return nil, fmt.Errorf("mta-sts policy: line %d: mode %q, want enforce, testing or none", i+1, value)
			}
			if !haveMode {
				p.Mode, haveMode = m, true
			}
		case "max_age":
			age, err := parseMaxAge(value)
			if err != nil {
				return nil, fmt.Errorf("mta-sts policy: line %d: %w", i+1, err)
			}
			if !haveMaxAg {
				p.MaxAge, haveMaxAg = age, true
			}
		case "mx":
			if !isMXPattern(value) {
				return nil, fmt.Errorf("mta-sts policy: line %d: bad mx pattern %q", i+1, value)
			}
			p.MX = append(p.MX, strings.ToLower(value))
		default:
			if !isExtensionName(key) {
				return nil, fmt.Errorf("mta-sts policy: line %d: bad field name %q", i+1, key)
			}
			if !isExtensionValue(value) {
				return nil, fmt.Errorf("mta-sts policy: line %d: bad value for %s", i+1, key)
			}
		}
	}
	switch {
	case p.Version == "":
		return nil, errors.New("mta-sts policy: no version")
	case !haveMode:
		return nil, errors.New("mta-sts policy: no mode")
	case !haveMaxAg:
		return nil, errors.New("mta-sts policy: no max_age")
	case len(p.MX) == 0 && p.Mode != MTASTSNone:
		return nil, errors.New("mta-sts policy: no mx")
	}
	return &p, nil
}

// policyField splits one line of a policy into key and value.
func policyField(line string) (key, value string, err error) {
	key, rest, ok := strings.Cut(line, ":")
	if !ok {
		if line == "" {
			return "", "", errors.New("empty line")
		}
		return "", "", errors.New(`no ":"`)
	}
	value = strings.TrimRight(strings.TrimLeft(rest, " \t"), " \t")
	if key == "" {
		return "", "", errors.New("empty field name")
	}
	return key, value, nil
}

// parseMaxAge parses 1*10DIGIT seconds, at most MaxMTASTSMaxAge.
func parseMaxAge(s string) (time.Duration, error) {
	if s == "" || len(s) > 10 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("max_age %q is not 1 to 10 digits", s)
	}
	n, _ := strconv.ParseInt(s, 10, 64)
	age := time.Duration(n) * time.Second
	if age > MaxMTASTSMaxAge {
		return 0, fmt.Errorf("max_age %s is more than %d", s, int64(MaxMTASTSMaxAge/time.Second))
	}
	return age, nil
}

// isMXPattern checks ["*."] Domain.
func isMXPattern(s string) bool {
	return isDomain(strings.TrimPrefix(s, "*."))
}

// isDomain checks the Domain of RFC 5321 section 4.1.2 with the length
// limits of RFC 1035: labels of letters, digits and inner hyphens, at least
// one dot-separated label, no trailing dot.
func isDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isLetDig(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

func isLetDig(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isExtensionName checks (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" /
// "."), the extension names of RFC 8461 (policy and TXT record) and RFC
// 8460.
func isExtensionName(s string) bool {
	if s == "" || len(s) > 32 || !isLetDig(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isLetDig(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// isExtensionValue checks a policy extension value: printable US-ASCII or
// non-ASCII UTF-8, with inner spaces (sts-policy-ext-value).
func isExtensionValue(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return false
		}
	}
	return s[0] != ' ' && s[len(s)-1] != ' '
}

// MTASTSRecord is the TXT record _mta-sts.<domain> (RFC 8461 section 3.1).
type MTASTSRecord struct {
	// ID identifies the current policy: 1 to 32 letters and digits. A new
	// id says the policy changed.
	ID string
}

// ParseMTASTSRecord parses the text of one TXT record (its strings joined,
// as resolver.LookupTXT returns it) after RFC 8461 section 3.1: "v=STSv1"
// first, then fields separated by ";" with optional spaces or tabs around
// it, an optional ";" at the end; "id" is required (1 to 32 letters and
// digits; a repeated id keeps the first); other fields are extensions
// (name "=" printable characters other than "=", ";" and space) and are
// ignored.
func ParseMTASTSRecord(txt string) (*MTASTSRecord, error) {
	fields, err := splitTagList(txt, "v=STSv1")
	if err != nil {
		return nil, fmt.Errorf("mta-sts record: %w", err)
	}
	var rec MTASTSRecord
	for _, f := range fields {
		name, value, _ := strings.Cut(f, "=")
		if name == "id" {
			if !isPolicyID(value) {
				return nil, fmt.Errorf("mta-sts record: bad id %q", value)
			}
			if rec.ID == "" {
				rec.ID = value
			}
			continue
		}
		if err := checkExtension(name, value); err != nil {
			return nil, fmt.Errorf("mta-sts record: %w", err)
		}
	}
	if rec.ID == "" {
		return nil, errors.New("mta-sts record: no id")
	}
	return &rec, nil
}

// singleRecord picks the one TXT record that begins with prefix; ok is false
// when there is not exactly one (RFC 8461 section 3.1, RFC 8460 section 3).
func singleRecord(txts []string, prefix string) (txt string, ok bool) {
	n := 0
	for _, t := range txts {
		if strings.HasPrefix(t, prefix) {
			txt = t
			n++
		}
	}
	return txt, n == 1
}

// splitTagList splits "VERSION; a=b; c=d;" into its fields after the
// version, which must come first. The fields are not checked.
func splitTagList(txt, version string) ([]string, error) {
	parts := strings.Split(txt, ";")
	if parts[0] = strings.TrimRight(parts[0], " \t"); parts[0] != version {
		return nil, fmt.Errorf("does not start with %q", version)
	}
	if last := len(parts) - 1; last > 0 && strings.Trim(parts[last], " \t") == "" {
		parts = parts[:last] // the optional ";" at the end
	}
	if len(parts) < 2 {
		return nil, errors.New("no fields after the version")
	}
	fields := parts[1:]
	for i, f := range fields {
		fields[i] = strings.Trim(f, " \t")
		if fields[i] == "" {
			return nil, errors.New("empty field")
		}
	}
	return fields, nil
}

// checkExtension checks name=value of a TXT record extension (RFC 8461
// section 3.1 and RFC 8460 section 3 share the grammar).
func checkExtension(name, value string) error {
	if !isExtensionName(name) {
		return fmt.Errorf("bad field name %q", name)
	}
	if value == "" {
		return fmt.Errorf("field %s has no value", name)
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c <= ' ' || c >= 0x7f || c == '=' || c == ';' {
			return fmt.Errorf("bad value for %s", name)
		}
	}
	return nil
}

// isPolicyID checks 1*32(ALPHA / DIGIT).
func isPolicyID(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLetDig(s[i]) {
			return false
		}
	}
	return true
}
