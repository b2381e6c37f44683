package smtpapp

import (
	"cmp"
	"context"
	"crypto/x509"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// TLSACheck watches the DANE records published for the servers' own
// hostnames (`_25._tcp.<host> TLSA`) against the certificates they
// present. It warns (log and metric) when the records no longer match,
// and before a renewal would change a key that a `3 1 x` record pins
// (certificate keys are not kept across renewals without
// reuse_certificate_keys), so that the records can be updated in time.
// Hosts without TLSA records are left alone.
type TLSACheck struct {
	// Disabled turns the check off. Default: false.
	Disabled bool `json:"disabled,omitempty"`
	// Interval is the time between checks; the first runs one interval
	// (at most a minute) after the start. Default: 6h.
	Interval caddy.Duration `json:"interval,omitempty"`
	// Resolvers are the DNS servers ("host:port") that look up the
	// records. Default: the system's.
	Resolvers []string `json:"resolvers,omitempty"`
	// Warn is how long before the expected renewal a key change is
	// warned about at warning level (before that, at info). Default: 14
	// days.
	Warn caddy.Duration `json:"warn,omitempty"`
}

const (
	defaultTLSACheckInterval = 6 * time.Hour
	defaultTLSACheckWarn     = 14 * 24 * time.Hour
)

// tlsaLoop runs the TLSA check until the app's context ends.
func (a *App) tlsaLoop(names []string) {
	c := a.TLSACheck
	if c == nil {
		c = new(TLSACheck)
	}
	if c.Disabled || len(names) == 0 {
		return
	}
	interval := cmp.Or(time.Duration(c.Interval), defaultTLSACheckInterval)
	warn := cmp.Or(time.Duration(c.Warn), defaultTLSACheckWarn)
	res, err := resolver.New(c.Resolvers, 0)
	if err != nil {
		a.logger.Error("TLSA check: resolver", zap.Error(err))
		return
	}
	log := a.logger.Named("tlsa")
	for _, name := range names { // the series exist from the start
		a.metrics.tlsaMismatch.WithLabelValues(name).Set(0)
		a.metrics.tlsaKeyChangePending.WithLabelValues(name).Set(0)
	}
	timer := time.NewTimer(min(interval, time.Minute))
	defer timer.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-timer.C:
		}
		for _, name := range names {
			a.checkTLSA(a.ctx, res, log, name, warn)
		}
		timer.Reset(interval)
	}
}

// checkTLSA compares the TLSA records of one host with its certificate.
func (a *App) checkTLSA(ctx context.Context, res *resolver.Resolver, log *zap.Logger, host string, warn time.Duration) {
	owner := "_25._tcp." + host
	mismatch, pending := a.metrics.tlsaMismatch.WithLabelValues(host), a.metrics.tlsaKeyChangePending.WithLabelValues(host)
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	recs, _, err := res.LookupTLSA(lctx, owner)
	cancel()
	if resolver.IsNotFound(err) {
		mismatch.Set(0)
		pending.Set(0)
		return
	}
	if err != nil {
		log.Debug("TLSA lookup failed", zap.String("name", owner), zap.Error(err))
		return
	}
	recs = tlsupgrade.UsableTLSA(recs)
	chain := CurrentChain(host)
	if len(recs) == 0 || chain == nil {
		return
	}
	if err := tlsupgrade.DANEVerify(chain, recs, host); err != nil {
		mismatch.Set(1)
		pending.Set(0)
		log.Error("published TLSA records do not match the certificate: senders that use DANE cannot deliver; publish the records of `caddy smtp tlsa`",
			zap.String("name", owner), zap.Error(err))
		return
	}
	mismatch.Set(0)
	var anchors []resolver.TLSA // DANE-TA records, which survive a new key
	for _, r := range recs {
		if r.Usage == 2 {
			anchors = append(anchors, r)
		}
	}
	anchored, kept := tlsupgrade.DANEVerify(chain, anchors, host) == nil, a.keyKept(host)
	if anchored || kept {
		pending.Set(0)
		log.Info("TLSA records match the certificate", zap.String("name", owner),
			zap.Bool("ca_record", anchored), zap.Bool("key_kept", kept))
		return
	}
	// Only a 3 1 x (or 3 0 x) record matches: the next renewal's new
	// key will not.
	pending.Set(1)
	renew := renewalTime(chain[0], a.renewalRatio(host))
	fields := []zap.Field{zap.String("name", owner), zap.Time("renewal_expected", renew),
		zap.String("advice", "set reuse_certificate_keys, or publish a 2 1 1 record of the issuing CA before then")}
	if time.Until(renew) <= warn {
		log.Warn("the next certificate renewal will change the key that the published TLSA record pins", fields...)
	} else {
		log.Info("a certificate renewal will change the key that the published TLSA record pins", fields...)
	}
}

// CurrentChain returns the chain of the newest certificate Caddy has
// loaded for host, leaf first; nil if there is none.
func CurrentChain(host string) []*x509.Certificate {
	var best *certmagic.Certificate
	for _, c := range caddytls.AllMatchingCertificates(host) {
		if c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.Leaf.NotAfter)) {
			best = &c
		}
	}
	if best == nil {
		return nil
	}
	var chain []*x509.Certificate
	for _, der := range best.Certificate.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil
		}
		chain = append(chain, c)
	}
	return chain
}

// policyFor returns the tls app's automation policy for name: the one
// that lists it, or the catch-all one.
func (a *App) policyFor(name string) *caddytls.AutomationPolicy {
	if a.tlsApp == nil || a.tlsApp.Automation == nil {
		return nil
	}
	var catchAll *caddytls.AutomationPolicy
	for _, ap := range a.tlsApp.Automation.Policies {
		if slices.Contains(ap.Subjects(), name) {
			return ap
		}
		if len(ap.Subjects()) == 0 && catchAll == nil {
			catchAll = ap
		}
	}
	return catchAll
}

// keyKept reports whether renewals of name's certificate keep its key.
func (a *App) keyKept(name string) bool {
	if ap := a.policyFor(name); ap != nil {
		return ap.ReusePrivateKeys
	}
	return a.ReuseCertificateKeys
}

// renewalRatio is CertMagic's renewal window ratio for name.
func (a *App) renewalRatio(name string) float64 {
	if ap := a.policyFor(name); ap != nil && ap.RenewalWindowRatio > 0 {
		return ap.RenewalWindowRatio
	}
	return certmagic.DefaultRenewalWindowRatio
}

// renewalTime is when CertMagic renews leaf without ACME renewal info:
// once the remaining part of its lifetime falls to ratio.
func renewalTime(leaf *x509.Certificate, ratio float64) time.Time {
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotAfter.Add(-time.Duration(float64(lifetime) * ratio))
}
