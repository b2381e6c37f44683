package lmtp_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtptargets/lmtp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// fallbacks counts the TLS fallbacks the target reports.
type fallbacks struct{ n int }

func (*fallbacks) CountDeliveries([]queue.Result, string, string) {}
func (f *fallbacks) CountFallback(r tlsupgrade.Result) {
	if !r.TLS && r.Fallback != "" && r.Level != tlsupgrade.LevelNone {
		f.n++
	}
}

// open provisions a target as the app would and opens a session.
func open(t *testing.T, target *lmtp.LMTP, m smtpapp.DeliveryMetrics) (map[string]any, error) {
	t.Helper()
	target.ConnectTimeout, target.Timeout = caddy.Duration(5*time.Second), caddy.Duration(10*time.Second)
	if err := target.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	if err := target.ProvisionTarget(smtpapp.TargetEnv{Hostname: "mx.example.internal", Logger: zap.NewNop(), Metrics: m}); err != nil {
		t.Fatal(err)
	}
	s, err := target.Open(context.Background(), "")
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if !s.Usable() {
		t.Error("a new session is not usable")
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range s.LogFields() {
		f.AddTo(enc)
	}
	return enc.Fields, nil
}

// TestSTARTTLS opens sessions to a Dovecot that offers STARTTLS with a
// certificate for 127.0.0.1 from a private CA, and to one without TLS, at
// each level.
func TestSTARTTLS(t *testing.T) {
	ca := testutil.NewCA(t)
	cert := ca.Issue(t, "127.0.0.1")
	caFile := ca.PEMFile(t)
	withTLS := startDovecot(t, &cert)
	plain := startDovecot(t, nil)

	for _, tc := range []struct {
		name   string
		target lmtp.LMTP
		want   map[string]any // log fields; nil: Open fails
	}{
		{"verify with the CA", lmtp.LMTP{Address: withTLS.tcp, TLS: "verify", CAFile: caFile},
			map[string]any{"tls": true, "tls_verified": true, "tls_version": "TLSv1.3"}},
		{"verify without the CA", lmtp.LMTP{Address: withTLS.tcp, TLS: "verify"}, nil},
		{"opportunistic (the default), unverified", lmtp.LMTP{Address: withTLS.tcp},
			map[string]any{"tls": true, "tls_verified": false}},
		{"required, unverified", lmtp.LMTP{Address: withTLS.tcp, TLS: "required"},
			map[string]any{"tls": true, "tls_verified": false}},
		{"none", lmtp.LMTP{Address: withTLS.tcp, TLS: "none"},
			map[string]any{"tls": false, "tls_fallback": "tls disabled by policy"}},
		{"unix socket: never TLS", lmtp.LMTP{Address: "unix/" + withTLS.socket},
			map[string]any{"tls": false, "tls_fallback": nil}},
		{"opportunistic, not offered", lmtp.LMTP{Address: plain.tcp},
			map[string]any{"tls": false, "tls_fallback": "starttls not offered"}},
		{"required, not offered", lmtp.LMTP{Address: plain.tcp, TLS: "required"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m fallbacks
			got, err := open(t, &tc.target, &m)
			if tc.want == nil {
				var de *queue.DeliveryError
				if !errors.As(err, &de) || !de.Temporary || !strings.HasPrefix(de.Enhanced, "4.7.") {
					t.Fatalf("Open: %v, want a temporary 4.7.x delivery error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("log field %s = %v, want %v (all: %v)", k, got[k], v, got)
				}
			}
			if want := tc.want["tls_fallback"] == "starttls not offered"; (m.n == 1) != want {
				t.Errorf("%d fallbacks counted; want one only for a plaintext session that wanted TLS", m.n)
			}
		})
	}
}
