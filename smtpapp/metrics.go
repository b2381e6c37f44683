package smtpapp

import (
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/pace"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// metrics are the smtp app's Prometheus metrics, registered in Caddy's
// metrics registry so that they appear next to Caddy's own. Labels take
// values from small fixed sets (server names come from the config); no
// label carries an address or a message ID.
type metrics struct {
	connections          *prometheus.CounterVec // server, tls
	connectionsRefused   *prometheus.CounterVec // server, reason
	tlsHandshakes        *prometheus.CounterVec // server, version
	tlsHandshakeFailures *prometheus.CounterVec // server, reason
	certificateWaits     *prometheus.CounterVec // server, result
	commandsRejected     *prometheus.CounterVec // server, reason
	checkResults         *prometheus.CounterVec // check, verdict
	messagesAccepted     *prometheus.CounterVec // server, tls
	messagesRejected     *prometheus.CounterVec // server, reason
	bytesReceived        *prometheus.CounterVec // server
	authFailures         *prometheus.CounterVec // server
	deliveries           *prometheus.CounterVec // result, tls, policy
	tlsFallbacks         *prometheus.CounterVec // reason
	deliveryResults      *prometheus.CounterVec // result, reason
	tlsaMismatch         *prometheus.GaugeVec   // host
	tlsaKeyChangePending *prometheus.GaugeVec   // host
}

const metricsNamespace = "caddy_smtp"

func newMetrics(ctx caddy.Context, a *App) *metrics {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		reg = prometheus.NewRegistry() // no config context (tests of parts)
	}
	f := promauto.With(reg)
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return f.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help}, labels)
	}
	m := &metrics{
		connections:          counter("connections_total", "Connections accepted, by server and TLS mode of the listener.", "server", "tls"),
		connectionsRefused:   counter("connections_refused_total", "Connections refused by a limit.", "server", "reason"),
		tlsHandshakes:        counter("tls_handshakes_total", "Completed inbound TLS handshakes (STARTTLS and implicit), by TLS version.", "server", "version"),
		tlsHandshakeFailures: counter("tls_handshake_failures_total", "Failed inbound TLS handshakes (STARTTLS and implicit), by reason: protocol_version, not_tls, no_client_hello, client_rejected_certificate, no_shared_cipher, timeout, client_closed, handshake_failure.", "server", "reason"),
		certificateWaits:     counter("certificate_waits_total", "Handshakes held because the certificate was not ready yet, by outcome (ready or timeout).", "server", "result"),
		commandsRejected:     counter("commands_rejected_total", "SMTP commands refused by policy or limits, by reason.", "server", "reason"),
		checkResults:         counter("check_results_total", "Verdicts of the checks, by check and verdict.", "check", "verdict"),
		messagesAccepted:     counter("messages_accepted_total", "Messages queued (answered 250), by server and whether the session used TLS (true or false): the inbound share of mail over TLS.", "server", "tls"),
		messagesRejected:     counter("messages_rejected_total", "Messages refused after DATA, by reason.", "server", "reason"),
		bytesReceived:        counter("received_bytes_total", "Bytes of accepted messages, our Received header included.", "server"),
		authFailures:         counter("auth_failures_total", "Failed SMTP AUTH attempts.", "server"),
		deliveries:           counter("delivery_attempts_total", "Delivery attempts per recipient, by result (delivered, deferred, failed), TLS (tls, plaintext, local) and TLS policy.", "result", "tls", "policy"),
		deliveryResults:      counter("delivery_results_total", "Outcomes of every recipient's delivery attempt, failed connections included, by result (delivered, deferred, bounced) and reason: none, connect, dns, timeout, tls_policy, tls_handshake, 4xx, 5xx, other.", "result", "reason"),
		tlsFallbacks:         counter("tls_fallbacks_total", "Outbound sessions that ended in plaintext although TLS was wanted, by reason.", "reason"),
		tlsaMismatch: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "tlsa_mismatch",
			Help: "1 while the TLSA records published for a server's hostname do not match its certificate (DANE senders cannot deliver)."}, []string{"host"}),
		tlsaKeyChangePending: f.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "tlsa_key_change_pending",
			Help: "1 while only a TLSA 3 1 x record pins a server's certificate key and the next renewal will replace the key (no key reuse)."}, []string{"host"}),
	}
	f.NewCounterFunc(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "quarantine_expired_total",
		Help: "Quarantined messages deleted at the end of quarantine_retention (since the process started)."}, func() float64 {
		return float64(queue.QuarantineDeleted())
	})
	f.NewCounterFunc(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "large_message_paced_seconds_total",
		Help: "Time the bodies of large messages waited for their share while small messages arrived (large_messages; since the process started)."}, func() float64 {
		return pace.Waited().Seconds()
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "queue_messages",
		Help: "Messages in the queue."}, func() float64 {
		n, _ := a.queueStats()
		return float64(n)
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "queue_storage_low",
		Help: "1 while the spool refuses new messages for want of free space (queue.min_free), else 0."}, func() float64 {
		if q := a.queue; q != nil && q.StorageLow() {
			return 1
		}
		return 0
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "queue_oldest_message_age_seconds",
		Help: "Age of the oldest message in the queue (0 when empty)."}, func() float64 {
		_, oldest := a.queueStats()
		if oldest.IsZero() {
			return 0
		}
		return time.Since(oldest).Seconds()
	})
	return m
}

// queueStats reads the queue's size and oldest arrival; zero values before
// the queue is attached.
func (a *App) queueStats() (int, time.Time) {
	if a.queue == nil {
		return 0, time.Time{}
	}
	return a.queue.Stats()
}

// CountDeliveries implements DeliveryMetrics: it counts per-recipient delivery results. A nil *metrics
// (a target used outside an app) counts nothing.
func (m *metrics) CountDeliveries(res []queue.Result, tlsLabel, policy string) {
	if m == nil {
		return
	}
	if policy == "" {
		policy = "opportunistic"
	}
	for _, r := range res {
		result := "delivered"
		switch {
		case r.Err == nil:
		case queue.IsTemporary(r.Err):
			result = "deferred"
		default:
			result = "failed"
		}
		m.deliveries.WithLabelValues(result, tlsLabel, policy).Inc()
	}
}

// CountFallback implements DeliveryMetrics: it counts an outbound session that ended in plaintext
// although STARTTLS was wanted.
func (m *metrics) CountFallback(r tlsupgrade.Result) {
	if m == nil || r.TLS || r.Fallback == "" || r.Level == tlsupgrade.LevelNone {
		return
	}
	reason := "other"
	switch {
	case strings.HasPrefix(r.Fallback, "starttls not offered"):
		reason = "not_offered"
	case strings.HasPrefix(r.Fallback, "starttls refused"):
		reason = "refused"
	case strings.HasPrefix(r.Fallback, "handshake failed"):
		reason = "handshake_failed"
	case strings.HasPrefix(r.Fallback, "starttls failed"):
		reason = "starttls_failed"
	}
	m.tlsFallbacks.WithLabelValues(reason).Inc()
}

// Interface guards
var _ DeliveryMetrics = (*metrics)(nil)
