// Package helo is the `smtp.checks.helo` check: the name a client gives
// in EHLO/HELO must be a host name or an address literal (RFC 5321
// section 4.1.1.1), and by default a fully qualified one, as Postfix's
// reject_invalid_helo_hostname and reject_non_fqdn_helo_hostname check.
package helo

import (
	"context"
	"net/netip"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(HELO{})
}

// HELO refuses recipients of clients whose EHLO/HELO name is not a host
// name or an address literal (`501 5.5.2`), or, unless AllowUnqualified,
// is a host name without a dot (`504 5.5.2`, e.g. `localhost` or `pc42`).
// An address literal must hold a valid address (`[192.0.2.1]`,
// `[IPv6:2001:db8::1]`).
type HELO struct {
	// AllowUnqualified takes host names without a dot. Default: false.
	AllowUnqualified bool `json:"allow_unqualified,omitempty"`
}

var (
	errInvalid     = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Helo command rejected: invalid host name"}
	errUnqualified = &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Helo command rejected: need a fully qualified host name"}
)

// CaddyModule returns the Caddy module information.
func (HELO) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.helo",
		New: func() caddy.Module { return new(HELO) },
	}
}

// CheckRecipient implements smtpapp.RecipientCheck.
func (h *HELO) CheckRecipient(_ context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	name := in.Helo
	if lit, ok := strings.CutPrefix(name, "["); ok {
		lit, ok = strings.CutSuffix(lit, "]")
		if v6, isV6 := strings.CutPrefix(lit, "IPv6:"); isV6 {
			lit = v6
		}
		if a, err := netip.ParseAddr(lit); ok && err == nil && a.Zone() == "" {
			return smtpapp.Accept()
		}
		return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errInvalid, Reason: "bad address literal " + name}
	}
	if !validHostName(name) {
		return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errInvalid, Reason: "invalid helo " + name}
	}
	if !h.AllowUnqualified && !strings.Contains(strings.TrimSuffix(name, "."), ".") {
		return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errUnqualified, Reason: "unqualified helo " + name}
	}
	return smtpapp.Accept()
}

// validHostName reports whether s is a host name (letters, digits and
// hyphens in labels of 1 to 63 octets, no hyphen at either end, an
// all-numeric last label only for a single label) or an A-label/U-label.
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= 0x80) {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return len(labels) == 1 || strings.Trim(last, "0123456789") != ""
}

// Interface guards
var _ smtpapp.RecipientCheck = (*HELO)(nil)
