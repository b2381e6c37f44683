package smtpapp

import (
	"context"
	"time"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// What the external tests (package smtpapp_test) look at inside.

func (a *App) TestQueue() *queue.Queue    { return a.queue }
func (a *App) TestMetrics() *metrics      { return a.metrics }
func (a *App) TestOutbound() queue.Target { return a.outbound }
func (a *App) TestSendTLSReports(ctx context.Context, start, end time.Time) {
	a.sendTLSReports(ctx, start, end)
}

// TestRouteFor is the route relay control finds for a recipient domain.
func (a *App) TestRouteFor(srv *Server, domain string) *Route {
	return a.routeFor(srv, MatchInput{RecipientDomain: domain}, true)
}

// TestPerIP is the number of open connections from ip.
func (s *Server) TestPerIP(ip string) int {
	s.perIPMu.Lock()
	defer s.perIPMu.Unlock()
	return s.perIP[ip]
}

// TestConns is the number of tracked open connections.
func (s *Server) TestConns() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return len(s.conns)
}

// TestTLSReports is the process-wide TLS-RPT recorder.
var TestTLSReports *tlsupgrade.TLSRPTRecorder = tlsReports

// TestCounter reads one of the app's counters by its field name.
func (a *App) TestCounter(name string, labels ...string) float64 {
	m := a.metrics
	vec := map[string]*prometheus.CounterVec{
		"connections": m.connections, "connectionsRefused": m.connectionsRefused,
		"tlsHandshakes": m.tlsHandshakes, "commandsRejected": m.commandsRejected,
		"messagesAccepted": m.messagesAccepted, "messagesRejected": m.messagesRejected,
		"deliveries": m.deliveries, "bytesReceived": m.bytesReceived,
		"tlsHandshakeFailures": m.tlsHandshakeFailures, "deliveryResults": m.deliveryResults,
	}[name]
	return testutil.ToFloat64(vec.WithLabelValues(labels...))
}
