// Package smtpapp implements the `smtp` Caddy app: SMTP servers with STARTTLS
// and implicit TLS whose certificates are managed by Caddy's `tls` app, and
// routes that hand accepted mail to delivery targets.
package smtpapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/pace"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the `smtp` app: a set of named SMTP servers sharing one set of
// routes. Mail for a recipient domain that a route accepts is taken from
// anyone; mail for any other domain is refused with `550 5.7.1`.
//
// Certificates for every server hostname are obtained and renewed by Caddy's
// `tls` app, exactly as Caddy's automatic HTTPS does for sites: public names
// get certificates from the configured ACME issuers, `localhost` and other
// internal names get them from Caddy's internal CA.
type App struct {
	// Hostname is the name this gateway uses in its greeting, in EHLO
	// replies and in Received headers, for every server that does not set
	// its own. It is also the default certificate name.
	// Default: the system host name.
	Hostname string `json:"hostname,omitempty"`

	// Servers are the SMTP servers, keyed by a name of your choosing (the
	// name appears in logs, e.g. `mx` or `submission`).
	Servers map[string]*Server `json:"servers,omitempty"`

	// Routes map recipient domains to delivery targets. The first route that
	// accepts a recipient's domain receives that recipient.
	Routes []*Route `json:"routes,omitempty"`

	// AutomaticCertificates hands every server hostname to Caddy's `tls` app
	// so that it obtains and renews a certificate for it. Set it to false
	// when you load certificates yourself (for example with the `tls` app's
	// `load_files`). Default: true.
	AutomaticCertificates *bool `json:"automatic_certificates,omitempty"`

	// ReuseCertificateKeys keeps the private key of the servers'
	// certificates across renewals (CertMagic key reuse), so that a
	// published DANE record of the server's own key (`TLSA 3 1 1`, see
	// `caddy smtp tlsa`) stays valid. Names that an automation policy of
	// the `tls` app lists explicitly keep that policy's setting
	// (`reuse_private_keys`). Default: false (a new key at each renewal).
	ReuseCertificateKeys bool `json:"reuse_certificate_keys,omitempty"`

	// TLSACheck compares the TLSA records published for the servers'
	// hostnames with their certificates and warns before a renewal would
	// change a pinned key. Default: on, every 6 hours.
	TLSACheck *TLSACheck `json:"tlsa_check,omitempty"`

	// GracePeriod is how long a stop or a config reload waits for open SMTP
	// sessions to finish before closing them. Sessions between transactions
	// are asked to leave with `421 4.3.2` at their next MAIL command.
	// Default: 30s.
	GracePeriod caddy.Duration `json:"grace_period,omitempty"`

	// Outbound is the delivery target for recipients whose domain no route
	// accepts: the mail that authenticated users and relay networks send to
	// the world, and DSNs to senders elsewhere. A module in the
	// `smtp.targets` namespace. Default: `{"target": "mx"}` (direct
	// delivery to the recipient domain's MX hosts).
	Outbound json.RawMessage `json:"outbound,omitempty" caddy:"namespace=smtp.targets inline_key=target"`

	// TLSReporting turns on the daily TLS-RPT reports (RFC 8460) to the
	// domains we deliver to that publish a `_smtp._tls` record. Outcomes
	// are recorded whether or not reports are sent. Default: no reports.
	TLSReporting *TLSReporting `json:"tls_reporting,omitempty"`

	// Queue configures the durable queue: every accepted message is
	// written there (and fsynced) before the client gets its 250.
	Queue *QueueConfig `json:"queue,omitempty"`

	// QuarantineRetention is how long a message that a check quarantined
	// is kept (counted from its quarantine) before it is deleted, without a
	// DSN, unless an administrator releases or deletes it first. A
	// quarantined message does not expire by the queue's `max_age`; once
	// released, its maximum age counts from the release. Default: 15d.
	QuarantineRetention caddy.Duration `json:"quarantine_retention,omitempty"`

	// LargeMessages paces the bodies of large messages while small ones
	// arrive, so that big uploads do not stall everybody else's replies.
	// Default: on, bodies beyond 1 MiB share 8 MiB/s per CPU.
	LargeMessages *LargeMessages `json:"large_messages,omitempty"`

	ctx            caddy.Context
	logger         *zap.Logger
	limits         *rateTable
	limitsReleased bool
	metrics        *metrics
	tlsApp         *caddytls.TLS
	names          map[string]struct{} // certificate names to manage
	outbound       queue.Target
	queue          *queue.Queue
	detachQueue    func()
	pacer          *pace.Pacer // nil: large bodies are not paced
	targetEnv      TargetEnv
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp",
		New: func() caddy.Module { return new(App) },
	}
}

const (
	defaultGracePeriod = 30 * time.Second
)

// Provision sets up the app: defaults, servers, routes and the TLS app.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	lim, _, err := rateTables.LoadOrNew(rateTableKey, func() (caddy.Destructor, error) {
		return newRateTable(maxRateKeys), nil
	})
	if err != nil {
		return err
	}
	a.limits = lim.(*rateTable)
	a.metrics = newMetrics(ctx, a)

	if a.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		a.Hostname = h
		if h := normalizeHostname(h); !strings.Contains(h, ".") && h != "localhost" {
			// A machine called "vm" would greet as vm and ask a CA for a
			// certificate for vm.
			a.logger.Warn("no hostname set and this machine's name is not fully qualified: set smtp { hostname mx.example.com }",
				zap.String("hostname", h))
		}
	}
	a.Hostname = normalizeHostname(a.Hostname)
	if a.GracePeriod == 0 {
		a.GracePeriod = caddy.Duration(defaultGracePeriod)
	}
	if a.QuarantineRetention < 0 {
		return fmt.Errorf("quarantine_retention: must not be negative")
	}
	if err := a.provisionPacer(); err != nil {
		return err
	}
	if err := a.provisionQueue(); err != nil {
		return err
	}
	res, err := resolver.New(nil, 0)
	if err != nil {
		return fmt.Errorf("system resolver: %w", err)
	}
	a.targetEnv = TargetEnv{
		Hostname:   a.Hostname,
		Logger:     a.logger.Named("delivery"),
		Metrics:    a.metrics,
		Resolver:   res,
		Storage:    ctx.Storage(),
		TLSReports: tlsReports,
	}
	if a.Outbound == nil {
		a.Outbound = json.RawMessage(`{"target": "mx"}`)
	}
	mod, err := ctx.LoadModule(a, "Outbound")
	if err != nil {
		return fmt.Errorf("loading outbound target: %w", err)
	}
	outbound, ok := mod.(queue.Target)
	if !ok {
		return fmt.Errorf("outbound: module %T is not a delivery target", mod)
	}
	if err := a.provisionTarget(outbound); err != nil {
		return fmt.Errorf("outbound: %w", err)
	}
	a.outbound = outbound

	for i, r := range a.Routes {
		if r == nil {
			return fmt.Errorf("route %d: empty definition", i)
		}
		if err := r.provision(ctx, a); err != nil {
			return fmt.Errorf("route %d: %w", i, err)
		}
	}

	// The tls app is loaded even when certificate automation is off: the
	// connection policies get their certificates from its cache.
	tlsAppIface, err := ctx.App("tls")
	if err != nil {
		return fmt.Errorf("getting tls app: %w", err)
	}
	a.tlsApp = tlsAppIface.(*caddytls.TLS)

	a.names = make(map[string]struct{})
	for name, srv := range a.Servers {
		if srv == nil {
			return fmt.Errorf("server %q: empty definition", name)
		}
		if err := srv.provision(ctx, a, name); err != nil {
			return fmt.Errorf("server %q: %w", name, err)
		}
		if srv.tlsEnabled() {
			a.names[srv.Hostname] = struct{}{}
		}
	}
	if a.automaticCertificates() {
		if err := a.addInternalPolicy(ctx); err != nil {
			return err
		}
		if a.ReuseCertificateKeys {
			if err := a.addKeyReusePolicy(); err != nil {
				return err
			}
		}
	}
	return nil
}

// addInternalPolicy does for our names what Caddy's automatic HTTPS does for
// site names: a name that cannot get a public certificate (localhost, an
// internal name, an IP address while no issuer is configured) and that no
// automation policy names explicitly gets one from Caddy's internal CA.
func (a *App) addInternalPolicy(ctx caddy.Context) error {
	var policies []*caddytls.AutomationPolicy
	if a.tlsApp.Automation != nil {
		policies = a.tlsApp.Automation.Policies
	}
	var internal []string
names:
	for name := range a.names {
		for _, ap := range policies {
			if slices.Contains(ap.Subjects(), name) {
				continue names
			}
			if len(ap.Subjects()) == 0 && allInternalIssuers(ap) {
				continue names // a catch-all internal policy (local_certs) covers it
			}
		}
		isIPWithDefaults := certmagic.SubjectIsIP(name) && len(policies) == 0
		if !certmagic.SubjectQualifiesForPublicCert(name) || isIPWithDefaults {
			internal = append(internal, name)
		}
	}
	if len(internal) == 0 {
		return nil
	}
	sort.Strings(internal)
	iss := new(caddytls.InternalIssuer)
	if err := iss.Provision(ctx); err != nil {
		return fmt.Errorf("provisioning internal issuer: %w", err)
	}
	ap := &caddytls.AutomationPolicy{SubjectsRaw: internal, Issuers: []certmagic.Issuer{iss}, ReusePrivateKeys: a.ReuseCertificateKeys}
	if err := a.tlsApp.AddAutomationPolicy(ap); err != nil {
		return fmt.Errorf("adding automation policy for %v: %w", internal, err)
	}
	return nil
}

// addKeyReusePolicy gives our names that no automation policy lists
// explicitly (those go by the catch-all policy, or Caddy's defaults) a
// policy of their own with the same issuers and key reuse on.
func (a *App) addKeyReusePolicy() error {
	var catchAll *caddytls.AutomationPolicy
	var names []string
	if a.tlsApp.Automation != nil {
	next:
		for name := range a.names {
			for _, ap := range a.tlsApp.Automation.Policies {
				if slices.Contains(ap.Subjects(), name) {
					continue next // explicit, or our internal policy (which has reuse set)
				}
			}
			names = append(names, name)
		}
		for _, ap := range a.tlsApp.Automation.Policies {
			if len(ap.Subjects()) == 0 {
				catchAll = ap
				break
			}
		}
	} else {
		for name := range a.names {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	ap := &caddytls.AutomationPolicy{SubjectsRaw: names, ReusePrivateKeys: true}
	if catchAll != nil {
		ap.Issuers, ap.KeyType, ap.OnDemand, ap.RenewalWindowRatio = catchAll.Issuers, catchAll.KeyType, catchAll.OnDemand, catchAll.RenewalWindowRatio
	}
	if err := a.tlsApp.AddAutomationPolicy(ap); err != nil {
		return fmt.Errorf("reuse_certificate_keys: adding automation policy for %v: %w", names, err)
	}
	return nil
}

func allInternalIssuers(ap *caddytls.AutomationPolicy) bool {
	if len(ap.Issuers) == 0 {
		return false
	}
	for _, iss := range ap.Issuers {
		if _, ok := iss.(*caddytls.InternalIssuer); !ok {
			return false
		}
	}
	return true
}

// Validate checks rules that span fields.
func (a *App) Validate() error {
	if len(a.Servers) == 0 {
		return errors.New("smtp: no servers defined")
	}
	if err := validateHostname(a.Hostname); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if a.GracePeriod < 0 {
		return errors.New("grace_period must not be negative")
	}
	if r := a.TLSReporting; r != nil && (r.Organization == "" || r.Contact == "") {
		return errors.New("tls_reporting needs organization and contact")
	}
	seen := make(map[string]string)
	for name, srv := range a.Servers {
		if err := srv.validate(); err != nil {
			return fmt.Errorf("server %q: %w", name, err)
		}
		for _, l := range srv.Listen {
			// Compare bound addresses, so ":25" and "tcp/:25" clash too.
			key := l.addr.String()
			if other, dup := seen[key]; dup {
				if other == name {
					return fmt.Errorf("server %q: listen %q: address listed twice", name, l.Address)
				}
				return fmt.Errorf("server %q: listen %q: address already used by server %q", name, l.Address, other)
			}
			seen[key] = name
		}
	}
	if err := validateRoutes(a.Routes); err != nil {
		return err
	}
	for name, srv := range a.Servers {
		if err := validateRoutes(srv.Routes); err != nil {
			return fmt.Errorf("server %q: %w", name, err)
		}
	}
	return nil
}

// validateRoutes rejects a domain named by two routes of one set that
// have no matchers: the second could never match.
func validateRoutes(routes []*Route) error {
	doms := make(map[string]int)
	for i, r := range routes {
		if len(r.matchers) > 0 {
			continue
		}
		for _, d := range r.Domains {
			if j, dup := doms[d]; dup {
				return fmt.Errorf("route %d: domain %q already routed by route %d", i, d, j)
			}
			doms[d] = i
		}
	}
	return nil
}

// Start begins certificate management and starts every server.
func (a *App) Start() error {
	if a.automaticCertificates() && len(a.names) > 0 {
		names := make([]string, 0, len(a.names))
		for n := range a.names {
			names = append(names, n)
		}
		a.logger.Info("enabling automatic TLS certificate management", zap.Strings("domains", names))
		if err := a.tlsApp.Manage(a.names); err != nil {
			return fmt.Errorf("managing certificates for %v: %w", names, err)
		}
	}
	if err := a.startQueue(); err != nil {
		return err
	}
	if a.TLSReporting != nil {
		a.restoreTLSRPT()
		go a.tlsrptLoop(a.ctx)
		go a.tlsrptSaveLoop(a.ctx)
	}
	var started []*Server
	for name, srv := range a.Servers {
		if err := srv.start(); err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(a.GracePeriod))
			for _, s := range started {
				s.stopAccepting()
				s.drain(ctx, true)
			}
			cancel()
			if a.detachQueue != nil {
				a.detachQueue()
				a.detachQueue = nil
			}
			a.releaseQueue()
			return fmt.Errorf("server %q: %w", name, err)
		}
		started = append(started, srv)
	}
	names := make([]string, 0, len(a.names))
	for n := range a.names {
		names = append(names, n)
	}
	sort.Strings(names)
	go a.tlsaLoop(names)
	return nil
}

// Stop stops accepting connections and drains open sessions within the
// grace period, then closes whatever is left.
//
// On a config reload the new config already serves new connections, so
// Stop returns at once: open sessions finish under this config in the
// background (as Postfix's smtpd processes do on `postfix reload`) and are
// closed when the grace period ends. When Caddy is exiting, Stop waits for
// them, and a client between transactions gets `421 4.3.2` at its next
// MAIL.
// Cleanup releases the app's hold on the state it shares with the next
// config (the rate table).
func (a *App) Cleanup() error {
	// Sessions of this config that are still finishing keep using the
	// table; it is only no longer held for this config.
	if a.limits != nil && !a.limitsReleased {
		_, _ = rateTables.Delete(rateTableKey)
		a.limitsReleased = true
	}
	return nil
}

func (a *App) Stop() error {
	if a.TLSReporting != nil {
		a.saveTLSRPT()
	}
	// The newest config's routes take over the queue now.
	if a.detachQueue != nil {
		a.detachQueue()
		a.detachQueue = nil
	}
	for _, srv := range a.Servers {
		srv.stopAccepting()
	}
	exiting := caddy.Exiting()
	drain := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(a.GracePeriod))
		defer cancel()
		var wg sync.WaitGroup
		for _, srv := range a.Servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv.drain(ctx, exiting)
			}()
		}
		wg.Wait()
		// Sessions are over: nothing more is enqueued by this config.
		a.releaseQueue()
	}
	if exiting {
		drain()
	} else {
		go drain()
	}
	return nil
}

func (a *App) automaticCertificates() bool {
	return a.AutomaticCertificates == nil || *a.AutomaticCertificates
}

// routeFor returns the first route that takes the recipient of mail
// received by srv: srv's own routes when it has any, else the app's. With
// limiting, only routes that limit recipients count (relay control: see
// Route). nil if none does.
func (a *App) routeFor(srv *Server, in MatchInput, limiting bool) *Route {
	routes := a.Routes
	if srv != nil && len(srv.Routes) > 0 {
		routes = srv.Routes
	}
	for _, r := range routes {
		if (!limiting || r.limitsRcpts) && r.matches(in) {
			return r
		}
	}
	return nil
}

// normalizeHostname lowercases a host name and removes a trailing dot.
func normalizeHostname(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
}

// validateHostname checks that h is usable in a greeting and as a
// certificate name.
func validateHostname(h string) error {
	if h == "" {
		return errors.New("empty")
	}
	if len(h) > 253 {
		return fmt.Errorf("%q is longer than 253 characters", h)
	}
	for _, r := range h {
		ok := r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r == ':' || r == '[' || r == ']'
		if !ok {
			return fmt.Errorf("%q contains %q", h, r)
		}
	}
	return nil
}

// RunningQueue returns the queue this app delivers from, nil before Start
// (and for an app whose start failed). Modules such as the admin API use
// it to act on the queue of the running config.
func (a *App) RunningQueue() *queue.Queue { return a.queue }

// managedName reports whether a certificate name is one this app asked the
// tls app to manage.
func (a *App) managedName(name string) bool {
	_, ok := a.names[name]
	return ok
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
