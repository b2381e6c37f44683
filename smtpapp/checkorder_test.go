package smtpapp_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	. "github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// rendezvous is a test check that only accepts once every other
// rendezvous check of the same RCPT has started too: run one after the
// other, the first would wait for ever (here: until its deadline, then
// reject). It marks itself concurrent, as the DNS checks do.
type rendezvous struct {
	Name string `json:"name,omitempty"`
}

var rendezvousPoint struct {
	mu      sync.Mutex
	arrived map[string]chan struct{}
}

func (rendezvous) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.checks.test_rendezvous", New: func() caddy.Module { return new(rendezvous) }}
}

func (r *rendezvous) Concurrent() {}

func (r *rendezvous) CheckRecipient(ctx context.Context, in *CheckInput) Verdict {
	p := &rendezvousPoint
	p.mu.Lock()
	for _, name := range []string{"a", "b"} {
		if p.arrived[in.Recipient+name] == nil {
			p.arrived[in.Recipient+name] = make(chan struct{})
		}
	}
	close(p.arrived[in.Recipient+r.Name])
	other := p.arrived[in.Recipient+map[string]string{"a": "b", "b": "a"}[r.Name]]
	p.mu.Unlock()
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case <-other:
		return Accept()
	case <-wait.Done():
		return Verdict{Result: VerdictReject, Reason: "the other check never started"}
	}
}

func init() {
	rendezvousPoint.arrived = make(map[string]chan struct{})
	caddy.RegisterModule(rendezvous{})
}

// TestConcurrentChecksStartTogether: the concurrent (DNS) checks of a list
// run at the same time, so a transaction waits for the slowest lookup
// rather than for their sum; their verdicts still count in order.
func TestConcurrentChecksStartTogether(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"checks": []any{
				map[string]any{"check": "test_rendezvous", "name": "a"},
				map[string]any{"check": "test_rendezvous", "name": "b"},
			},
		}},
	}))
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	if r := d.cmd("RCPT TO:<u@example.test>"); !strings.HasPrefix(r, "250") {
		t.Fatalf("RCPT: %q: the checks did not run at the same time", r)
	}
}
