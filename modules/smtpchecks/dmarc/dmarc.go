// Package dmarc is the `smtp.checks.dmarc` check: the DMARC policy (RFC
// 7489) of the domain in a message's From header, evaluated at the end of
// DATA against the SPF and DKIM results of the spf and dkim checks, with
// identifier alignment (relaxed or strict) on organisational domains.
package dmarc

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/mail"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
	"golang.org/x/net/publicsuffix"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/checkopt"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/mailhdr"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/ttlcache"
	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(DMARC{})
}

// DMARC looks up the policy of the From header's domain (and, when that
// has none, of its organisational domain, by the public suffix list) while
// the body streams in, and decides at the end of DATA: the message passes
// when SPF passed for an envelope sender aligned with the From domain, or
// a DKIM signature of an aligned domain verified. A failing message gets
// what its domain asks for (p=, or sp= for a subdomain; pct= applied as
// RFC 7489 6.6.4 says unless HonorPct is off), mapped by Reject and
// Quarantine. The result goes into the Authentication-Results header
// (dmarc=pass header.from=...).
//
// It needs the spf check (in the server's checks) and the dkim check
// before it; without them every message with a policy fails.
type DMARC struct {
	// Reject is what a failing message whose domain asks for p=reject
	// gets: `reject` (550 5.7.1), `quarantine` or `tag` (accepted; the
	// Authentication-Results header says dmarc=fail). Default: reject.
	Reject string `json:"reject,omitempty"`

	// Quarantine is what a failing message whose domain asks for
	// p=quarantine gets: `quarantine` (held in the spool), `reject` or
	// `tag`. Default: quarantine.
	Quarantine string `json:"quarantine,omitempty"`

	// HonorPct applies the policy to the percentage of failing messages
	// that pct= names, the others getting the next milder policy. Default:
	// true.
	HonorPct *bool `json:"honor_pct,omitempty"`

	// MultipleFrom is what a message gets whose header has no single From
	// address but several (a way around DMARC): `reject` (550 5.7.1) or
	// `accept` (dmarc=permerror). Default: reject.
	MultipleFrom string `json:"multiple_from,omitempty"`

	// TempError is what a message gets whose policy could not be looked
	// up: `accept` (dmarc=temperror) or `tempfail` (451 4.7.1). Default:
	// accept.
	TempError string `json:"temperror,omitempty"`

	// Resolvers are the DNS servers to ask ("ip" or "ip:port"). Default:
	// the servers in /etc/resolv.conf.
	Resolvers []string `json:"resolvers,omitempty"`

	// Timeout bounds the policy lookups of one message. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// CacheTTL is how long a domain's policy (or its absence) is kept.
	// Default: 5m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	resolver *resolver.Resolver
	logger   *zap.Logger

	cache *ttlcache.Cache[string, policy]
}

// policy is the outcome of a lookup.
type policy struct {
	rec    *dmarc.Record // nil: none published
	domain string        // where rec was found
	temp   bool          // the lookup failed temporarily
	perm   bool          // the record is broken
}

const (
	actionReject     = "reject"
	actionQuarantine = "quarantine"
	actionTag        = "tag"
	actionAccept     = "accept"
	actionTempfail   = "tempfail"

	defaultTimeout  = 10 * time.Second
	defaultCacheTTL = 5 * time.Minute
	cacheMax        = 10_000
	maxHeader       = 256 << 10
)

var (
	errMultipleFrom = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message must have exactly one From address"}
	errTempError    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "DMARC policy lookup failed, try again later"}
)

// CaddyModule returns the Caddy module information.
func (DMARC) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.dmarc",
		New: func() caddy.Module { return new(DMARC) },
	}
}

// Provision checks the actions and sets up the resolver.
func (m *DMARC) Provision(ctx caddy.Context) error {
	m.logger = ctx.Logger()
	if err := checkopt.Actions("dmarc",
		checkopt.Action{Field: &m.Reject, Name: "reject", Default: actionReject, Allowed: []string{actionReject, actionQuarantine, actionTag}},
		checkopt.Action{Field: &m.Quarantine, Name: "quarantine", Default: actionQuarantine, Allowed: []string{actionQuarantine, actionReject, actionTag}},
		checkopt.Action{Field: &m.MultipleFrom, Name: "multiple_from", Default: actionReject, Allowed: []string{actionReject, actionAccept}},
		checkopt.Action{Field: &m.TempError, Name: "temperror", Default: actionAccept, Allowed: []string{actionAccept, actionTempfail}},
	); err != nil {
		return err
	}
	if m.Timeout < 0 || m.CacheTTL < 0 {
		return fmt.Errorf("dmarc: timeout and cache_ttl must not be negative")
	}
	if m.Timeout == 0 {
		m.Timeout = caddy.Duration(defaultTimeout)
	}
	if m.CacheTTL == 0 {
		m.CacheTTL = caddy.Duration(defaultCacheTTL)
	}
	r, err := resolver.New(m.Resolvers, time.Duration(m.Timeout))
	if err != nil {
		return fmt.Errorf("dmarc: %w", err)
	}
	m.resolver = r
	m.cache = ttlcache.New[string, policy](cacheMax)
	return nil
}

// RunsAfter implements smtpapp.CheckOrder: the DKIM results must be in
// when DMARC decides.
func (*DMARC) RunsAfter() []string { return []string{"dkim"} }

// StartMessage implements smtpapp.MessageCheck.
// Mail from trusted clients (authenticated, relay_networks) is not
// judged: their own domain's policy is not theirs to pass at this hop.
func (m *DMARC) StartMessage(in *smtpapp.MessageInput) smtpapp.MessageJudge {
	if in.Trusted {
		return trusted{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(m.Timeout))
	return &judge{m: m, tx: in.Tx, ctx: ctx, cancel: cancel}
}

// trusted is the judge of a trusted client's message: no objection.
type trusted struct{}

func (trusted) Write(p []byte) (int, error) { return len(p), nil }
func (trusted) Finish(context.Context) smtpapp.Verdict {
	return smtpapp.Verdict{Note: "skipped (trusted client)"}
}
func (trusted) Abort() {}

// judge evaluates one message.
type judge struct {
	m      *DMARC
	tx     *smtpapp.Transaction
	ctx    context.Context
	cancel context.CancelFunc

	header     []byte
	headerDone bool
	from       []string // the From addresses' domains
	fromErr    string   // why no single From domain was found
	lookup     chan policy
}

func (j *judge) Write(p []byte) (int, error) {
	if j.headerDone {
		return len(p), nil
	}
	j.header = append(j.header, p...)
	if i := bytes.Index(j.header, []byte("\r\n\r\n")); i >= 0 {
		j.header = j.header[:i+2]
		j.endHeader()
	} else if len(j.header) > maxHeader {
		j.endHeader()
	}
	return len(p), nil
}

// endHeader finds the From domain and starts the policy lookup while the
// body streams in.
func (j *judge) endHeader() {
	j.headerDone = true
	j.from, j.fromErr = fromDomains(j.header)
	j.header = nil
	if len(j.from) == 1 {
		j.lookup = make(chan policy, 1)
		go func() { j.lookup <- j.m.policyFor(j.ctx, j.from[0]) }()
	}
}

func (j *judge) Abort() { j.cancel() }

// Finish decides.
func (j *judge) Finish(ctx context.Context) smtpapp.Verdict {
	defer j.cancel()
	if !j.headerDone {
		j.endHeader()
	}
	if len(j.from) != 1 {
		j.tx.SetAuthResult("dmarc", &authres.DMARCResult{Value: authres.ResultPermError, Reason: j.fromErr})
		if j.m.MultipleFrom == actionReject && len(j.from) > 1 {
			return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errMultipleFrom, Reason: "dmarc: " + j.fromErr, Note: "permerror"}
		}
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "permerror", Reason: j.fromErr}
	}
	domain := j.from[0]
	var p policy
	select {
	case p = <-j.lookup:
	case <-ctx.Done():
		p = policy{temp: true}
	}
	res := &authres.DMARCResult{From: domain}
	switch {
	case p.temp:
		res.Value = authres.ResultTempError
		j.tx.SetAuthResult("dmarc", res)
		if j.m.TempError == actionTempfail {
			return smtpapp.Verdict{Result: smtpapp.VerdictTempfail, Reply: errTempError, Reason: "dmarc: policy lookup failed for " + domain, Note: "temperror"}
		}
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "temperror"}
	case p.perm:
		res.Value = authres.ResultPermError
		j.tx.SetAuthResult("dmarc", res)
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "permerror"}
	case p.rec == nil:
		res.Value = authres.ResultNone
		j.tx.SetAuthResult("dmarc", res)
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "none"}
	}
	if j.aligned(domain, p.rec) {
		res.Value = authres.ResultPass
		j.tx.SetAuthResult("dmarc", res)
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "pass"}
	}
	pol := p.rec.Policy
	if p.domain != domain && p.rec.SubdomainPolicy != "" {
		pol = p.rec.SubdomainPolicy
	}
	sampled := ""
	if p.rec.Percent != nil && *p.rec.Percent < 100 && (j.m.HonorPct == nil || *j.m.HonorPct) && rand.IntN(100) >= *p.rec.Percent {
		// RFC 7489 6.6.4: outside the sample, the next milder policy.
		switch pol {
		case dmarc.PolicyReject:
			pol = dmarc.PolicyQuarantine
		case dmarc.PolicyQuarantine:
			pol = dmarc.PolicyNone
		}
		sampled = " (pct)"
	}
	res.Value = authres.ResultFail
	res.Reason = "p=" + string(pol)
	j.tx.SetAuthResult("dmarc", res)
	note := "fail p=" + string(pol) + sampled
	reason := "dmarc=fail header.from=" + domain + " p=" + string(pol) + sampled
	action := actionTag
	switch pol {
	case dmarc.PolicyReject:
		action = j.m.Reject
	case dmarc.PolicyQuarantine:
		action = j.m.Quarantine
	}
	switch action {
	case actionReject:
		return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reason: reason, Note: note, Reply: &smtp.SMTPError{
			Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: "Message rejected: it fails the DMARC policy of " + domain}}
	case actionQuarantine:
		return smtpapp.Verdict{Result: smtpapp.VerdictQuarantine, Reason: reason, Note: note}
	}
	return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Reason: reason, Note: note}
}

// aligned reports whether SPF or DKIM passed for a domain aligned with the
// From domain (RFC 7489 3.1).
func (j *judge) aligned(from string, rec *dmarc.Record) bool {
	for _, r := range j.tx.AuthResults() {
		switch r := r.(type) {
		case *authres.SPFResult:
			d := r.Helo
			if r.From != "" {
				d = r.From[strings.LastIndexByte(r.From, '@')+1:]
			}
			if r.Value == authres.ResultPass && alignedDomains(d, from, rec.SPFAlignment) {
				return true
			}
		case *authres.DKIMResult:
			if r.Value == authres.ResultPass && alignedDomains(r.Domain, from, rec.DKIMAlignment) {
				return true
			}
		}
	}
	return false
}

// alignedDomains compares an authenticated domain with the From domain:
// equal in strict mode, the same organisational domain in relaxed mode
// (the default).
func alignedDomains(d, from string, mode dmarc.AlignmentMode) bool {
	d = normalize(d)
	if d == "" {
		return false
	}
	if d == from {
		return true
	}
	return mode != dmarc.AlignmentStrict && orgDomain(d) == orgDomain(from)
}

// orgDomain is the organisational domain: the public suffix plus one label.
func orgDomain(d string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

func normalize(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

// policyFor looks up the policy for a From domain: its own record, else
// its organisational domain's (RFC 7489 6.6.3); cached.
func (m *DMARC) policyFor(ctx context.Context, domain string) policy {
	now := time.Now()
	if p, ok := m.cache.Get(domain, now); ok {
		return p
	}
	p := m.lookup(ctx, domain)
	if p.rec == nil && !p.temp && !p.perm {
		if org := orgDomain(domain); org != domain {
			p = m.lookup(ctx, org)
		}
	}
	if !p.temp {
		m.cache.Put(domain, p, now, time.Duration(m.CacheTTL))
	}
	return p
}

// lookup asks for _dmarc.<domain>. Several DMARC records are as good as
// none (RFC 7489 6.6.3).
func (m *DMARC) lookup(ctx context.Context, domain string) policy {
	txts, err := m.resolver.LookupTXT(ctx, "_dmarc."+domain)
	switch {
	case resolver.IsNotFound(err):
		return policy{}
	case err != nil:
		m.logger.Warn("dmarc policy lookup failed", zap.String("domain", domain), zap.Error(err))
		return policy{temp: true}
	}
	var found []string
	for _, t := range txts {
		if strings.HasPrefix(strings.TrimSpace(t), "v=DMARC1") {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		return policy{}
	}
	rec, err := dmarc.Parse(found[0])
	if err != nil {
		return policy{perm: true, domain: domain}
	}
	return policy{rec: rec, domain: domain}
}

// fromDomains returns the domains of the From header's addresses, or why
// there is no single one.
func fromDomains(header []byte) (domains []string, problem string) {
	var values []string
	for _, f := range mailhdr.Fields(header) {
		name, value, ok := strings.Cut(f, ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), "From") {
			values = append(values, value)
		}
	}
	switch {
	case len(values) == 0:
		return nil, "no From header field"
	case len(values) > 1:
		return make([]string, len(values)), "several From header fields"
	}
	addrs, err := mail.ParseAddressList(values[0])
	if err == nil {
		for _, a := range addrs {
			domains = append(domains, normalize(a.Address[strings.LastIndexByte(a.Address, '@')+1:]))
		}
	} else if d := rawDomain(values[0]); d != "" {
		// An address net/mail cannot parse (an unknown charset in the
		// display name): the domain of its angle address.
		domains = []string{d}
	}
	switch {
	case len(domains) == 0:
		return nil, "no From address"
	case len(domains) > 1:
		return domains, "several From addresses"
	}
	return domains, ""
}

// rawDomain takes the domain from the last <...@domain> in v.
func rawDomain(v string) string {
	i := strings.LastIndexByte(v, '<')
	j := strings.LastIndexByte(v, '>')
	if i < 0 || j < i {
		return ""
	}
	addr := v[i+1 : j]
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return normalize(addr[at+1:])
}

// Interface guards
var (
	_ caddy.Provisioner    = (*DMARC)(nil)
	_ smtpapp.MessageCheck = (*DMARC)(nil)
	_ smtpapp.CheckOrder   = (*DMARC)(nil)
)
