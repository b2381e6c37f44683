package smtpapp_test

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// TestTLSRPTCountsSurviveRestart: the day's TLS-RPT counts are saved in
// Caddy storage when the gateway stops and restored when a new process
// starts, so the next daily report still has them.
func TestTLSRPTCountsSurviveRestart(t *testing.T) {
	e := newTestEnv(t)
	cfg := func() map[string]any {
		return e.config(map[string]any{
			"hostname":      "tlsrpt-restart.test",
			"tls_reporting": map[string]any{"organization": "caddy-smtp test", "contact": "postmaster@sender.test"},
			"servers": map[string]any{"mx": map[string]any{
				"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			}},
		})
	}
	smtpapp.TestTLSReports.Reports("", "", time.Time{}, time.Time{}) // start from an empty tally
	e.load(cfg())
	for range 3 {
		smtpapp.TestTLSReports.Record("remote.test", tlsupgrade.PolicyTypeNoPolicy, nil, "mx.remote.test", true, nil)
	}
	smtpapp.TestTLSReports.Record("remote.test", tlsupgrade.PolicyTypeNoPolicy, nil, "mx.remote.test", false,
		&tlsupgrade.FailureDetail{ResultType: "certificate-not-trusted", ReceivingMXHostname: "mx.remote.test"})
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	// The stopped config closes its queue in the background.
	eventually(t, "queue closed after stop", func() bool {
		s, err := spoolfs.Lock(e.spool, "msg")
		if err != nil {
			return false
		}
		s.Close()
		return true
	})

	// A new process: nothing in memory.
	smtpapp.TestTLSReports.Reports("", "", time.Time{}, time.Time{})
	smtpapp.ForgetTLSRPTProcessState()
	e.load(cfg())
	reports := smtpapp.TestTLSReports.Reports("caddy-smtp test", "postmaster@sender.test", time.Now().Add(-time.Hour), time.Now())
	if len(reports) != 1 || len(reports[0].Policies) != 1 {
		t.Fatalf("after the restart the reports are %+v, want one for remote.test", reports)
	}
	set := reports[0].Policies[0]
	if set.Policy.Domain != "remote.test" || set.Summary.TotalSuccessfulSessionCount != 3 || set.Summary.TotalFailureSessionCount != 1 ||
		len(set.FailureDetails) != 1 || set.FailureDetails[0].FailedSessionCount != 1 || set.FailureDetails[0].ResultType != "certificate-not-trusted" {
		t.Fatalf("restored report %+v, want 3 successful and 1 certificate-not-trusted session", set)
	}
}
