// Package smtpmatchers holds the standard route matchers of the smtp app,
// the modules of the `smtp.matchers` namespace. A route's `match` set names
// them with their values; all must match:
//
//	"match": {
//		"recipient_domain": ["example.com", "*.example.com"],
//		"sender":           ["alerts@corp.example"],
//		"sender_domain":    ["corp.example"],
//		"remote_ip":        ["192.0.2.0/24", "2001:db8::1"],
//		"authenticated":    true
//	}
//
// In the Caddyfile they go in a `match` block of a route:
//
//	route {
//		match {
//			sender_domain corp.example
//			authenticated
//		}
//		relay smarthost.example:587
//	}
package smtpmatchers

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(RecipientDomain{})
	caddy.RegisterModule(Sender{})
	caddy.RegisterModule(SenderDomain{})
	caddy.RegisterModule(RemoteIP{})
	caddy.RegisterModule(Authenticated(false))
}

// RecipientDomain matches recipients whose domain is in the list (without
// regard to case; `*.example.com` matches every subdomain of example.com,
// not example.com itself). It is what a route's `domains` say, and like
// them it limits the recipients a route accepts from anyone.
type RecipientDomain []string

// CaddyModule returns the Caddy module information.
func (RecipientDomain) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.matchers.recipient_domain", New: func() caddy.Module { return new(RecipientDomain) }}
}

// Provision checks and normalises the domains.
func (m *RecipientDomain) Provision(caddy.Context) error {
	if len(*m) == 0 {
		return fmt.Errorf("recipient_domain: no domains")
	}
	_, err := smtpapp.NormalizeDomainPatterns(*m)
	return err
}

// MatchRoute implements smtpapp.RouteMatcher.
func (m RecipientDomain) MatchRoute(in smtpapp.MatchInput) bool {
	return smtpapp.MatchDomain(m, in.RecipientDomain)
}

// LimitsRecipients implements smtpapp.RecipientLimiter.
func (RecipientDomain) LimitsRecipients() bool { return true }

// Sender matches messages whose envelope sender is one of the addresses,
// compared without regard to case. `<>` stands for the null sender (DSNs).
type Sender []string

// CaddyModule returns the Caddy module information.
func (Sender) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.matchers.sender", New: func() caddy.Module { return new(Sender) }}
}

// Provision checks the addresses.
func (m *Sender) Provision(caddy.Context) error {
	if len(*m) == 0 {
		return fmt.Errorf("sender: no addresses")
	}
	for i, a := range *m {
		a = strings.ToLower(strings.TrimSpace(a))
		if a != "<>" && (!strings.Contains(a, "@") || strings.HasPrefix(a, "@") || strings.HasSuffix(a, "@")) {
			return fmt.Errorf("sender: %q is not an address (or <> for the null sender)", (*m)[i])
		}
		(*m)[i] = a
	}
	return nil
}

// MatchRoute implements smtpapp.RouteMatcher.
func (m Sender) MatchRoute(in smtpapp.MatchInput) bool {
	from := strings.ToLower(in.Sender)
	if from == "" {
		from = "<>"
	}
	for _, a := range m {
		if a == from {
			return true
		}
	}
	return false
}

// SenderDomain matches messages whose envelope sender's domain is in the
// list, with the same patterns as RecipientDomain. The null sender has no
// domain and never matches.
type SenderDomain []string

// CaddyModule returns the Caddy module information.
func (SenderDomain) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.matchers.sender_domain", New: func() caddy.Module { return new(SenderDomain) }}
}

// Provision checks and normalises the domains.
func (m *SenderDomain) Provision(caddy.Context) error {
	if len(*m) == 0 {
		return fmt.Errorf("sender_domain: no domains")
	}
	_, err := smtpapp.NormalizeDomainPatterns(*m)
	return err
}

// MatchRoute implements smtpapp.RouteMatcher.
func (m SenderDomain) MatchRoute(in smtpapp.MatchInput) bool {
	i := strings.LastIndexByte(in.Sender, '@')
	if i < 0 {
		return false
	}
	domain := strings.TrimSuffix(strings.ToLower(in.Sender[i+1:]), ".")
	return smtpapp.MatchDomain(m, domain)
}

// RemoteIP matches messages from clients in the networks (CIDRs or single
// addresses), parsed as relay_networks are. Messages we made ourselves
// (DSNs, reports) have no client address and never match. In JSON it is a
// list: `"remote_ip": ["192.0.2.0/24", "2001:db8::1"]`.
type RemoteIP struct {
	// Ranges are the networks as given.
	Ranges []string

	nets smtpapp.IPNetworks
}

// CaddyModule returns the Caddy module information.
func (RemoteIP) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.matchers.remote_ip", New: func() caddy.Module { return new(RemoteIP) }}
}

// MarshalJSON writes the list of networks.
func (m RemoteIP) MarshalJSON() ([]byte, error) { return json.Marshal(m.Ranges) }

// UnmarshalJSON reads the list of networks.
func (m *RemoteIP) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &m.Ranges) }

// Provision parses the networks once.
func (m *RemoteIP) Provision(caddy.Context) error {
	if len(m.Ranges) == 0 {
		return fmt.Errorf("remote_ip: no networks")
	}
	nets, err := smtpapp.ParseNetworks(m.Ranges)
	if err != nil {
		return fmt.Errorf("remote_ip: %w", err)
	}
	m.nets = nets
	return nil
}

// MatchRoute implements smtpapp.RouteMatcher.
func (m *RemoteIP) MatchRoute(in smtpapp.MatchInput) bool {
	return m.nets.Contains(in.ClientIP)
}

// Authenticated matches messages from clients that did (true) or did not
// (false) log in with SMTP AUTH.
type Authenticated bool

// CaddyModule returns the Caddy module information.
func (Authenticated) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.matchers.authenticated", New: func() caddy.Module { return new(Authenticated) }}
}

// MatchRoute implements smtpapp.RouteMatcher.
func (m Authenticated) MatchRoute(in smtpapp.MatchInput) bool {
	return bool(m) == (in.AuthUser != "")
}

// Interface guards
var (
	_ smtpapp.RecipientLimiter = RecipientDomain(nil)
	_ caddy.Provisioner        = (*RecipientDomain)(nil)
	_ smtpapp.RouteMatcher     = Sender(nil)
	_ caddy.Provisioner        = (*Sender)(nil)
	_ smtpapp.RouteMatcher     = SenderDomain(nil)
	_ caddy.Provisioner        = (*SenderDomain)(nil)
	_ smtpapp.RouteMatcher     = (*RemoteIP)(nil)
	_ caddy.Provisioner        = (*RemoteIP)(nil)
	_ smtpapp.RouteMatcher     = Authenticated(false)
)
