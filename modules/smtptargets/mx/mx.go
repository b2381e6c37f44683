// Package mx is the `smtp.targets.mx` delivery target: mail to the world,
// to the MX hosts of each recipient domain, under DANE, MTA-STS or the
// configured TLS level.
package mx

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/smtptargets/smtpclient"
	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

func init() {
	caddy.RegisterModule(MX{})
}

// MX is the delivery target for mail to the world: it looks up the MX hosts
// of each recipient domain (falling back to the domain's own address when
// it has no MX, RFC 5321 5.1) and tries them in preference order. A null MX
// (RFC 7505) or a domain that does not exist bounces; DNS trouble and
// unreachable hosts defer. All recipients of one domain share connections.
//
// The TLS policy of each MX host is chosen in this order: DANE (RFC 7672)
// when the MX and TLSA answers are DNSSEC-authenticated (this needs a
// validating resolver: see `resolvers`); else the domain's MTA-STS policy
// (RFC 8461) in enforce mode; else the configured level (`tls`, or
// `domain_tls` for the domain), with a testing-mode MTA-STS policy checked
// and reported. A policy that cannot be met defers the message (it bounces
// only at the queue's max_age); it never falls back to plaintext. Results
// are recorded for TLS-RPT (RFC 8460).
type MX struct {
	// Resolvers are the DNS servers to ask (`host:port`, port 53 when
	// omitted) for every lookup of a delivery: MX, A/AAAA, TLSA, the
	// `_mta-sts` TXT record and the address of the MTA-STS policy host.
	// DANE trusts only answers with the AD bit, so for DANE
	// these must be validating resolvers you trust (a local unbound, for
	// example). Default: the servers in /etc/resolv.conf.
	Resolvers []string `json:"resolvers,omitempty"`

	// TLS is the STARTTLS level for domains without DANE or an enforced
	// MTA-STS policy: `opportunistic` (default), `required`, `verify`
	// (certificate valid for the MX host name), `none`, or `dane` /
	// `mta-sts` to require that standard for every domain.
	TLS string `json:"tls,omitempty"`

	// DomainTLS sets the level per recipient domain, overriding TLS, e.g.
	// `{"partner.example": "verify"}`.
	DomainTLS map[string]string `json:"domain_tls,omitempty"`

	// MTASTS looks up and applies the MTA-STS policies of recipient
	// domains, cached in Caddy's storage. Default: true.
	MTASTS *bool `json:"mta_sts,omitempty"`

	// DANE looks up TLSA records of DNSSEC-signed MX hosts and, where
	// there are usable ones, authenticates the hosts with them. Default:
	// true.
	DANE *bool `json:"dane,omitempty"`

	// CAFile is a PEM bundle of extra roots to trust at the verify level,
	// on top of the system roots. Default: the system roots only.
	CAFile string `json:"ca_file,omitempty"`

	// ConnectTimeout limits connecting to one address. Default: 30s.
	ConnectTimeout caddy.Duration `json:"connect_timeout,omitempty"`

	// Timeout limits the wait for each reply of an MX host (the greeting,
	// every command). Default: 5m (RFC 5321 4.5.3.2).
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// MaxAddresses is how many addresses are tried for one destination
	// before it is deferred. A host's addresses are tried IPv6 first,
	// then alternating between IPv6 and IPv4 (RFC 8305), so the budget is
	// not spent on one family. Default: 5.
	MaxAddresses int `json:"max_addresses,omitempty"`

	// SourceAddresses are the local addresses connections leave from: at
	// most one IPv4 and one IPv6 address (the addresses receivers check
	// SPF and reverse DNS against). A family without one leaves from the
	// system's choice. Default: the system's choice.
	SourceAddresses []string `json:"source_addresses,omitempty"`

	// Port is the port of the MX hosts. Default: 25. Only tests change
	// this.
	Port int `json:"port,omitempty"`

	localName  string
	metrics    smtpapp.DeliveryMetrics
	tlsReports *tlsupgrade.TLSRPTRecorder
	storage    certmagic.Storage
	ctx        context.Context
	logger     *zap.Logger
	resolver   *resolver.Resolver
	roots      *x509.CertPool
	sts        *tlsupgrade.MTASTSCache
	sources    smtpclient.Sources
}

// CaddyModule returns the Caddy module information.
func (MX) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.targets.mx",
		New: func() caddy.Module { return new(MX) },
	}
}

// Provision sets up the resolver, the trust roots and the MTA-STS cache.
func (m *MX) Provision(ctx caddy.Context) error {
	if err := tlsupgrade.Level(m.TLS).Validate(); err != nil {
		return fmt.Errorf("mx: %w", err)
	}
	for d, l := range m.DomainTLS {
		if err := tlsupgrade.Level(l).Validate(); err != nil {
			return fmt.Errorf("mx: domain_tls %q: %w", d, err)
		}
	}
	if m.ConnectTimeout < 0 || m.Timeout < 0 || m.MaxAddresses < 0 || m.Port < 0 || m.Port > 65535 {
		return errors.New("mx: connect_timeout, timeout, max_addresses and port must be valid non-negative values")
	}
	if m.ConnectTimeout == 0 {
		m.ConnectTimeout = caddy.Duration(30 * time.Second)
	}
	var err error
	if m.sources, err = smtpclient.ParseSources(m.SourceAddresses); err != nil {
		return fmt.Errorf("mx: %w", err)
	}
	if m.MaxAddresses == 0 {
		m.MaxAddresses = 5
	}
	if m.Port == 0 {
		m.Port = 25
	}
	if len(m.Resolvers) > 0 {
		r, err := resolver.New(m.Resolvers, 0)
		if err != nil {
			return fmt.Errorf("mx: resolvers: %w", err)
		}
		m.resolver = r
	}
	m.ctx = ctx
	m.logger = ctx.Logger()
	if m.roots, err = tlsupgrade.LoadRoots(m.CAFile); err != nil {
		return fmt.Errorf("mx: ca_file: %w", err)
	}
	return nil
}

// ProvisionTarget implements smtpapp.TargetProvisioner: our name, the
// metrics, the TLS-RPT recorder, and the resolver and storage when the
// target has none of its own.
func (m *MX) ProvisionTarget(env smtpapp.TargetEnv) error {
	m.localName, m.metrics, m.tlsReports = env.Hostname, env.Metrics, env.TLSReports
	if m.resolver == nil {
		m.resolver = env.Resolver
	}
	if m.MTASTS == nil || *m.MTASTS {
		// Every lookup for a domain goes through the target's resolver:
		// the _mta-sts TXT record and the policy host's address too.
		m.sts = &tlsupgrade.MTASTSCache{Resolver: m.resolver, Store: storageStore{ctx: m.ctx, s: env.Storage},
			Fetcher: &tlsupgrade.MTASTSFetcher{Resolver: m.resolver}}
	}
	return nil
}

// PolicyCache is the target's MTA-STS policy cache, nil when MTA-STS is
// off. Programs that embed the target may set its Fetcher.
func (m *MX) PolicyCache() *tlsupgrade.MTASTSCache { return m.sts }

// tlsOptionalSuffix marks the destination key of messages whose sender
// said "TLS-Required: No": they get sessions of their own, without DANE
// and MTA-STS enforcement.
const tlsOptionalSuffix = "\x00tls-optional"

// Destination implements queue.Target: the recipient's domain.
func (m *MX) Destination(msg *queue.Message, rcpt string) string {
	if msg != nil && msg.TLSOptional && !msg.RequireTLS {
		return queue.Domain(rcpt) + tlsOptionalSuffix
	}
	return queue.Domain(rcpt)
}

// levelFor returns the configured level for a domain.
func (m *MX) levelFor(domain string) tlsupgrade.Level {
	if l, ok := m.DomainTLS[domain]; ok {
		return tlsupgrade.Level(l)
	}
	return tlsupgrade.Level(m.TLS)
}

// Open implements queue.Target: connect to the first MX host that answers
// and meets the domain's TLS policy.
func (m *MX) Open(ctx context.Context, dest string) (queue.Session, error) {
	domain, tlsOptional := strings.CutSuffix(dest, tlsOptionalSuffix)
	port := strconv.Itoa(m.Port)
	level := m.levelFor(domain)
	if lit, ok := strings.CutPrefix(domain, "["); ok {
		ip := net.ParseIP(strings.TrimPrefix(strings.TrimSuffix(lit, "]"), "IPv6:"))
		if ip == nil {
			return nil, &queue.DeliveryError{Code: 550, Enhanced: "5.1.2", Message: "bad address literal " + domain}
		}
		return m.dialHost(ctx, "", []net.IP{ip}, port, tlsupgrade.Policy{Level: level}, false)
	}
	hosts, mxAuth, err := m.resolver.MXHosts(ctx, domain)
	if err != nil {
		return nil, mxLookupError(domain, err)
	}
	// RFC 5321 5.1: if we are one of the MX hosts, only more preferred
	// hosts may be tried; if we are the most preferred, the mail loops.
	for i, h := range hosts {
		if strings.EqualFold(h.Host, m.localName) {
			hosts = hosts[:i]
			for len(hosts) > 0 && hosts[len(hosts)-1].Pref >= h.Pref {
				hosts = hosts[:len(hosts)-1]
			}
			if len(hosts) == 0 {
				return nil, &queue.DeliveryError{Code: 554, Enhanced: "5.4.6",
					Message: "mail for " + domain + " loops back to myself"}
			}
			break
		}
	}
	useStandards := level != tlsupgrade.LevelNone && !tlsOptional
	if tlsOptional {
		level = tlsupgrade.LevelOpportunistic
	}
	var sts *tlsupgrade.MTASTSPolicy
	if m.sts != nil && useStandards {
		var stsErr error
		sts, stsErr = m.sts.Lookup(ctx, domain)
		if stsErr != nil {
			// RFC 8461 3.3: deliver as if there were no policy.
			m.logger.Warn("MTA-STS policy discovery failed", zap.String("domain", domain), zap.Error(stsErr))
		}
	}
	var errs queue.Errors         // for the log
	var fails smtpclient.Failures // for the sender
	tried, policyFailures := 0, 0
	for _, h := range hosts {
		if tried >= m.MaxAddresses {
			break
		}
		d := tlsupgrade.Destination{Configured: level, MXAuthenticated: mxAuth, MTASTS: sts}
		if useStandards && (m.DANE == nil || *m.DANE) && mxAuth {
			recs, tlsaAuth, err := m.resolver.LookupTLSA(ctx, "_25._tcp."+h.Host)
			if err != nil && !resolver.IsNotFound(err) {
				// RFC 7672 2.1.1: a signed MX whose TLSA lookup fails
				// must not be used without DANE.
				errs = append(errs, err)
				fails.Add(h.Host, err)
				m.tlsReports.RecordResult(domain, tlsupgrade.Result{Policy: "dane", Failure: tlsupgrade.ResultDNSSECInvalid, FailureReason: err.Error()}, nil, h.Host)
				policyFailures++
				continue
			}
			d.TLSA, d.TLSAAuthenticated = recs, tlsaAuth
		}
		policy, err := tlsupgrade.SelectPolicy(h.Host, d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Host, err))
			fails.Add(h.Host, err)
			var pe *tlsupgrade.PolicyError
			if errors.As(err, &pe) {
				m.tlsReports.RecordResult(domain, tlsupgrade.Result{Policy: string(d.Configured), Failure: pe.ResultType, FailureReason: pe.Err.Error()}, sts, h.Host)
			}
			policyFailures++
			continue
		}
		ips, err := m.resolver.LookupIP(ctx, h.Host)
		if err != nil {
			errs = append(errs, err)
			fails.Add(h.Host, err)
			continue
		}
		ips = smtpclient.Interleave(ips)
		if len(ips) > m.MaxAddresses-tried {
			ips = ips[:m.MaxAddresses-tried]
		}
		tried += len(ips)
		requireTLSOK := mxAuth || sts != nil && sts.Mode != tlsupgrade.MTASTSNone && sts.Matches(h.Host)
		sess, err := m.dialHost(ctx, h.Host, ips, port, policy, requireTLSOK)
		if err == nil {
			m.tlsReports.RecordResult(domain, sess.(*smtpclient.Session).Result(), sts, h.Host)
			return sess, nil
		}
		var de *tlsupgrade.DialError
		if errors.As(err, &de) && de.Result.Failure != "" {
			m.tlsReports.RecordResult(domain, de.Result, sts, h.Host)
			policyFailures++
		}
		errs = append(errs, err)
		fails.Add(h.Host, err)
	}
	enhanced := "4.4.1"
	if policyFailures > 0 && policyFailures == len(errs) {
		enhanced = "4.7.5" // only TLS policy failures: a cryptographic failure
	}
	why := fails.String()
	if why == "" {
		why = "no MX host could be tried"
	}
	return nil, &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: enhanced,
		Message: "cannot deliver to " + domain + ": " + why, Err: errs}
}

// dialHost tries the addresses of one host in order.
func (m *MX) dialHost(ctx context.Context, host string, ips []net.IP, port string, policy tlsupgrade.Policy, requireTLSOK bool) (queue.Session, error) {
	var last error
	for _, ip := range ips {
		addr := net.JoinHostPort(ip.String(), port)
		opts := tlsupgrade.Options{LocalName: m.localName, ServerName: host, Policy: policy, RootCAs: m.roots,
			ConnectTimeout: time.Duration(m.ConnectTimeout), CommandTimeout: time.Duration(m.Timeout)}
		if !m.sources.Empty() {
			opts.DialContext = m.sources.DialContext
		}
		conn, err := tlsupgrade.Dial(ctx, addr, opts)
		if err != nil {
			last = err
			continue
		}
		name := host
		if name == "" {
			name = ip.String()
		}
		return smtpclient.New(conn, name, addr, m.metrics, requireTLSOK), nil
	}
	if last == nil {
		last = errors.New("no addresses")
	}
	return nil, last
}

// mxLookupError maps a DNS failure to a delivery error: a null MX or a
// domain without mail hosts bounces, DNS trouble defers.
func mxLookupError(domain string, err error) error {
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		return &queue.DeliveryError{Code: 556, Enhanced: "5.1.10", Message: domain + " does not accept mail (null MX)", Err: err}
	case resolver.IsNotFound(err):
		return &queue.DeliveryError{Code: 550, Enhanced: "5.1.2", Message: "no mail host for " + domain, Err: err}
	}
	msg := "DNS lookup for " + domain + " failed"
	if re, ok := errors.AsType[*resolver.Error](err); ok {
		msg = smtpclient.DescribeDNS(re)
	}
	return &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.3", Message: msg, Err: err}
}

// storageStore keeps MTA-STS policies in Caddy's storage, so that a fleet
// sharing storage shares them, and they survive restarts.
type storageStore struct {
	ctx context.Context
	s   certmagic.Storage
}

func (s storageStore) Get(key string) ([]byte, error) {
	b, err := s.s.Load(s.ctx, "smtp/"+key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (s storageStore) Put(key string, value []byte) error {
	return s.s.Store(s.ctx, "smtp/"+key, value)
}

// Interface guards
var (
	_ caddy.Provisioner         = (*MX)(nil)
	_ queue.Target              = (*MX)(nil)
	_ smtpapp.TargetProvisioner = (*MX)(nil)
)
