package smtpapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Route sends recipients of some domains to one delivery target.
type Route struct {
	// Domains are the recipient domains this route accepts, matched without
	// regard to case. `*.example.com` matches every subdomain of
	// example.com (but not example.com itself).
	Domains []string `json:"domains,omitempty"`

	// Deliver is the delivery target for recipients this route accepts,
	// a module in the `smtp.targets` namespace, e.g.
	// `{"target": "maildir", "path": "/var/mail/{domain}"}`.
	Deliver json.RawMessage `json:"deliver,omitempty" caddy:"namespace=smtp.targets inline_key=target"`

	target queue.Target
}

func (r *Route) provision(ctx caddy.Context, app *App) error {
	if len(r.Domains) == 0 {
		return errors.New("no domains")
	}
	for i, d := range r.Domains {
		n := normalizeHostname(d)
		if err := validateHostname(strings.TrimPrefix(n, "*.")); err != nil || strings.Contains(strings.TrimPrefix(n, "*."), "*") {
			return fmt.Errorf("invalid domain %q", d)
		}
		r.Domains[i] = n
	}
	if r.Deliver == nil {
		return errors.New("no delivery target")
	}
	mod, err := ctx.LoadModule(r, "Deliver")
	if err != nil {
		return fmt.Errorf("loading delivery target: %w", err)
	}
	t, ok := mod.(queue.Target)
	if !ok {
		return fmt.Errorf("module %T is not a delivery target", mod)
	}
	app.configureTarget(t)
	r.target = t
	return nil
}

// targetConfig is what the app tells the targets it loads: our hostname
// (the EHLO name of SMTP targets) and where to count deliveries.
type targetConfig struct {
	localName string
	metrics   *metrics
}

// configureTarget hands a target the app-wide settings it needs.
func (a *App) configureTarget(t queue.Target) {
	if c, ok := t.(interface{ configure(targetConfig) }); ok {
		c.configure(targetConfig{localName: a.Hostname, metrics: a.metrics})
	}
}

// matches reports whether the route accepts the (normalised) domain.
func (r *Route) matches(domain string) bool {
	for _, d := range r.Domains {
		if d == domain {
			return true
		}
		if suffix, ok := strings.CutPrefix(d, "*"); ok && strings.HasSuffix(domain, suffix) && len(domain) > len(suffix) {
			return true
		}
	}
	return false
}
