package smtpapp

import (
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// TargetProvisioner is implemented by delivery targets (modules of the
// `smtp.targets` namespace, which implement queue.Target) that need what
// only the app knows. After loading a target (and so after its Provision),
// the app calls ProvisionTarget once with the app-wide environment. Our own
// targets use nothing else, so a third-party target can do what they do.
type TargetProvisioner interface {
	ProvisionTarget(env TargetEnv) error
}

// TargetEnv is what the app hands the delivery targets it loads.
type TargetEnv struct {
	// Hostname is the gateway's name: the EHLO name of SMTP targets and the
	// host part of generated names.
	Hostname string
	// Logger is the `delivery` logger; targets name their children.
	Logger *zap.Logger
	// Metrics counts delivery attempts and TLS fallbacks. Never nil.
	Metrics DeliveryMetrics
	// Resolver is the app's DNS resolver (the servers in /etc/resolv.conf),
	// for targets that are not told to use their own.
	Resolver *resolver.Resolver
	// Storage is Caddy's configured storage: shared by a fleet that shares
	// storage, kept across restarts.
	Storage certmagic.Storage
	// TLSReports collects outbound TLS outcomes for TLS-RPT (RFC 8460).
	TLSReports *tlsupgrade.TLSRPTRecorder
}

// DeliveryMetrics counts what delivery targets do, in the app's metrics.
type DeliveryMetrics interface {
	// CountDeliveries counts the per-recipient results of one attempt.
	// tls is "tls", "plaintext" or "local" (no network hop); policy is the
	// outbound TLS policy ("" counts as opportunistic).
	CountDeliveries(res []queue.Result, tls, policy string)
	// CountFallback counts an outbound session that ended in plaintext
	// although STARTTLS was wanted (nothing for other results).
	CountFallback(r tlsupgrade.Result)
}

// provisionTarget hands a loaded target the app-wide environment.
func (a *App) provisionTarget(t queue.Target) error {
	if p, ok := t.(TargetProvisioner); ok {
		return p.ProvisionTarget(a.targetEnv)
	}
	return nil
}
