package lists

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The kinds of entries.
const (
	// KindIP is a client address or network: `192.0.2.7`, `192.0.2.0/24`,
	// `2001:db8::/32`.
	KindIP = "ip"
	// KindHelo is the name the client gave in EHLO/HELO: `mail.example.com`,
	// `.example.com` for any name under example.com, or an address literal
	// such as `[192.0.2.7]`.
	KindHelo = "helo"
	// KindSender is an envelope sender address, `<>` for the null sender.
	KindSender = "sender"
	// KindSenderDomain is the domain of the envelope sender: `example.com`,
	// or `.example.com` for its subdomains.
	KindSenderDomain = "sender_domain"
	// KindRecipient is a recipient address, or its domain in the forms of
	// KindSenderDomain.
	KindRecipient = "recipient"
)

// Kinds are the entry kinds, in the default order of the check.
var Kinds = []string{KindIP, KindHelo, KindSender, KindSenderDomain, KindRecipient}

// The names of the two lists.
const (
	Allow = "allow"
	Block = "block"
)

// Names are the names of the lists.
var Names = []string{Allow, Block}

// Entry is one element of a list.
type Entry struct {
	// Kind is one of Kinds.
	Kind string `json:"kind"`
	// Value is what the entry matches, normalised: lowercase, networks
	// with their host bits zero, domains without a trailing dot.
	Value string `json:"value"`
	// Comment is free text for the administrators.
	Comment string `json:"comment,omitempty"`
	// Added is when the entry was added.
	Added time.Time `json:"added,omitzero"`
}

// Lists is the content of both lists, as GET /smtp/lists returns it.
type Lists struct {
	Allow []Entry `json:"allow"`
	Block []Entry `json:"block"`
}

// maxComment bounds the length of a comment, in bytes.
const maxComment = 500

// Normalize checks an entry's kind, value and comment and returns the
// entry with its value in the form the list keeps.
func Normalize(e Entry) (Entry, error) {
	if !slices.Contains(Kinds, e.Kind) {
		return e, fmt.Errorf("kind %q: want one of %s", e.Kind, strings.Join(Kinds, ", "))
	}
	v, err := normalizeValue(e.Kind, strings.TrimSpace(e.Value))
	if err != nil {
		return e, fmt.Errorf("%s %q: %w", e.Kind, e.Value, err)
	}
	e.Value = v
	if len(e.Comment) > maxComment || !utf8.ValidString(e.Comment) || strings.ContainsFunc(e.Comment, unicode.IsControl) {
		return e, fmt.Errorf("comment: want at most %d bytes of UTF-8 text on one line", maxComment)
	}
	return e, nil
}

func normalizeValue(kind, v string) (string, error) {
	if v == "" {
		return "", errors.New("empty value")
	}
	switch kind {
	case KindIP:
		return normalizeNet(v)
	case KindHelo:
		if strings.HasPrefix(v, "[") {
			return normalizeLiteral(v)
		}
		return normalizeDomain(v, true)
	case KindSender:
		if v == "<>" {
			return v, nil
		}
		return normalizeAddress(v)
	case KindSenderDomain:
		return normalizeDomain(v, true)
	default: // KindRecipient
		if strings.Contains(v, "@") {
			return normalizeAddress(v)
		}
		return normalizeDomain(v, true)
	}
}

// normalizeNet reads an address or a network. A network with host bits
// set is refused: 192.0.2.7/24 is more likely a typing mistake than a
// wish for 192.0.2.0/24.
func normalizeNet(v string) (string, error) {
	if !strings.Contains(v, "/") {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return "", errors.New("not an IP address or CIDR network")
		}
		return a.Unmap().String(), nil
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return "", errors.New("not an IP address or CIDR network")
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		return "", fmt.Errorf("host bits set (the network is %s)", m)
	}
	if p.IsSingleIP() {
		return p.Addr().String(), nil
	}
	return p.String(), nil
}

// normalizeLiteral reads an address literal of HELO: [192.0.2.7] or
// [IPv6:2001:db8::7].
func normalizeLiteral(v string) (string, error) {
	inner, ok := strings.CutSuffix(strings.TrimPrefix(v, "["), "]")
	if !ok {
		return "", errors.New("address literal without ']'")
	}
	if rest, ok := cutPrefixFold(inner, "ipv6:"); ok {
		a, err := netip.ParseAddr(rest)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", errors.New("not an IPv6 address literal")
		}
		return "[ipv6:" + a.String() + "]", nil
	}
	a, err := netip.ParseAddr(inner)
	if err != nil || !a.Is4() {
		return "", errors.New("not an IPv4 address literal")
	}
	return "[" + a.String() + "]", nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// normalizeDomain reads a domain name, lowercased and without a trailing
// dot; with dotted, a leading dot (subdomains of) is kept.
func normalizeDomain(v string, dotted bool) (string, error) {
	v = strings.ToLower(strings.TrimSuffix(v, "."))
	name := v
	if dotted {
		name = strings.TrimPrefix(v, ".")
	}
	if name == "" || len(name) > 253 {
		return "", errors.New("not a domain name")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return "", errors.New("not a domain name")
		}
		for _, r := range label {
			// Letters and digits of any script (internationalised
			// domains in UTF-8), '-' and '_' (seen in real HELO names).
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '-' && r != '_' {
				return "", fmt.Errorf("character %q in a domain name", r)
			}
		}
	}
	return v, nil
}

// normalizeAddress reads local@domain. The whole address is lowercased:
// local parts are case-sensitive in theory, not in practice.
func normalizeAddress(v string) (string, error) {
	i := strings.LastIndexByte(v, '@')
	if i <= 0 || i > 64 {
		return "", errors.New("not an address (want local@domain)")
	}
	local, domain := v[:i], v[i+1:]
	if !utf8.ValidString(local) || strings.ContainsFunc(local, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r == '<' || r == '>'
	}) {
		return "", errors.New("not an address (space or control character in the local part)")
	}
	var err error
	if strings.HasPrefix(domain, "[") {
		domain, err = normalizeLiteral(domain)
	} else {
		domain, err = normalizeDomain(domain, false)
	}
	if err != nil {
		return "", fmt.Errorf("domain: %w", err)
	}
	return strings.ToLower(local) + "@" + domain, nil
}
