package smtpstatus_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpstatus"
)

// TestScriptedRun runs the smtp app and the page behind basic_auth,
// sends the scripted mail and checks every number the page reports, then
// reloads (two handlers in the new config) and checks that nothing counts
// twice, and finally that the counters are in storage after the stop.
func TestScriptedRun(t *testing.T) {
	g := startGateway(t)
	s := g.scriptedRun()

	want := smtpstatus.Point{Delivered: 3, Deferred: 1, Bounced: 1} // 2 relayed + the DSN
	if got := s.Totals24h; got.Delivered != want.Delivered || got.Deferred != want.Deferred || got.Bounced != want.Bounced {
		t.Errorf("24h totals = %+v, want %+v", got, want)
	}
	if got := s.Totals30d; got.Delivered != want.Delivered || got.Deferred != want.Deferred || got.Bounced != want.Bounced {
		t.Errorf("30d totals = %+v", got)
	}
	if len(s.Hours) != 24 || len(s.Days) != 30 {
		t.Fatalf("%d hours and %d days, want 24 and 30", len(s.Hours), len(s.Days))
	}
	// the run is in the last bucket (or the last two, across an hour or
	// a midnight)
	if last := s.Hours[23]; !last.Start.Equal(s.Generated.Truncate(time.Hour)) || last.Delivered+s.Hours[22].Delivered != 3 {
		t.Errorf("current hour = %+v (generated %v)", last, s.Generated)
	}
	if today := s.Days[29]; !today.Start.Equal(s.Generated.Truncate(24*time.Hour)) || today.Bounced+s.Days[28].Bounced != 1 {
		t.Errorf("today = %+v", today)
	}
	if s.Totals24h.In != (smtpstatus.TLSCount{TLS: 2, Plain: 1}) {
		t.Errorf("inbound = %+v, want 2 over TLS and 1 in plaintext", s.Totals24h.In)
	}
	if s.Totals24h.Out != (smtpstatus.TLSCount{TLS: 1, Plain: 1}) {
		t.Errorf("outbound = %+v, want 1 over TLS and 1 in plaintext (the DSN is local)", s.Totals24h.Out)
	}
	for _, c := range []struct {
		name   string
		table  []smtpstatus.DomainShare
		domain string
		want   smtpstatus.TLSCount
	}{
		{"inbound", s.Inbound, "tls.example", smtpstatus.TLSCount{TLS: 2}},
		{"inbound", s.Inbound, "plain.example", smtpstatus.TLSCount{Plain: 1}},
		{"outbound", s.Outbound, "tls-rcpt.test", smtpstatus.TLSCount{TLS: 1}},
		{"outbound", s.Outbound, "plain-rcpt.test", smtpstatus.TLSCount{Plain: 1}},
	} {
		got, err := share(c.table, c.domain)
		if err != nil || got != c.want {
			t.Errorf("%s %s = %+v (%v), want %+v", c.name, c.domain, got, err, c.want)
		}
	}
	if len(s.Inbound) != 2 || len(s.Outbound) != 2 {
		t.Errorf("inbound %+v, outbound %+v: want two domains each", s.Inbound, s.Outbound)
	}
	if s.Inbound[0].Domain != "plain.example" {
		t.Errorf("the plaintext sender is not first: %+v", s.Inbound)
	}
	if q := s.Queue; q == nil || q.Messages != 1 || q.Oldest == nil {
		t.Errorf("queue = %+v, want the message with the deferred recipient", q)
	}
	if got := g.tlsRcpt.received(); len(got) != 1 || got[0] != "x@tls-rcpt.test" {
		t.Errorf("the TLS receiver got %v", got)
	}

	// the page itself: behind the login, with a strict CSP
	resp, body := g.get("", false)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without login: %d, want 401", resp.StatusCode)
	}
	resp, body = g.get("", true)
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != http.StatusOK || !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
		t.Errorf("page: %d, CSP %q", resp.StatusCode, csp)
	}
	if !strings.Contains(string(body), `data-domain="plain.example"`) || strings.Contains(string(body), "<script") {
		t.Errorf("page body:\n%s", body)
	}
	if resp, _ := g.get("?format=xml", true); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown format: %d", resp.StatusCode)
	}

	// a reload to a config with two handlers: one more plaintext message
	// counts once
	routes := g.config["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any)["status"].(map[string]any)
	second := routes["routes"].([]any)[0].(map[string]any)
	routes["routes"] = append(routes["routes"].([]any), map[string]any{
		"match": []any{map[string]any{"path": []string{"/status2"}}}, "handle": second["handle"]})
	g.load()
	g.send(false, "b@plain.example", "z@plain-rcpt.test")
	testutil.Eventually(t, 20*time.Second, "the delivery after the reload", func() bool {
		return len(g.plain.received()) == 2
	})
	s = g.status()
	if got, _ := share(s.Inbound, "plain.example"); got.Plain != 2 {
		t.Errorf("after the reload plain.example sent %d in plaintext, want 2 (1 before, 1 after)", got.Plain)
	}
	testutil.Eventually(t, 10*time.Second, "the delivery counted", func() bool {
		s = g.status()
		return s.Totals24h.Delivered >= 4
	})
	if s.Totals24h.Delivered != 4 {
		t.Errorf("after the reload %d delivered, want 4", s.Totals24h.Delivered)
	}

	// the stop writes the counters to storage
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	id, err := caddy.InstanceID()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(g.storage, "smtp", "status", "nodes", id.String()+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var stored smtpstatus.Counters
	if err := json.Unmarshal(raw, &stored); err != nil {
		t.Fatal(err)
	}
	if n := len(stored.Hours); n != 1 || stored.Hours[0].Delivered != 4 || stored.Hours[0].In.Plain != 2 {
		t.Errorf("stored counters: %s", raw)
	}
}
