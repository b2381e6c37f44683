package interop

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCalloutAgainstPostfix: a route guarded by the callout check asks the
// customer's server (a private Postfix with a virtual mailbox table that
// knows alice and bob) about each recipient at our RCPT. Known users are
// taken and delivered; an unknown one gets 550 5.1.1 without Postfix's
// name or text. Answers are cached: with Postfix stopped, the recipients
// asked before get the same answers, a new one gets 451 4.4.3.
func TestCalloutAgainstPostfix(t *testing.T) {
	p := newPostfix(t, nil)
	vmail := p.virtualMailboxes("customer.test", "alice", "bob")
	p.start()

	g := newGateway(t)
	gwAddr := loopback(freePort(t))
	g.start(g.config(map[string]any{
		"hostname": "localhost",
		"servers":  map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": gwAddr}}}},
		"routes": []any{map[string]any{
			"domains": []string{"customer.test"},
			"checks":  []any{map[string]any{"check": "callout", "timeout": "10s"}},
			"deliver": map[string]any{"target": "relay", "hosts": []string{p.addr()}},
		}},
	}, nil), gwAddr)

	c := dialSMTP(t, gwAddr, nil)
	c.cmd("EHLO client.sender.test", 250)
	c.cmd("MAIL FROM:<sender@sender.test>", 250)
	c.cmd("RCPT TO:<alice@customer.test>", 250)
	refused := c.cmd("RCPT TO:<nobody@customer.test>", 550)
	if !strings.HasPrefix(refused, "550 5.1.1") || strings.Contains(refused, "postfix") || strings.Contains(refused, "virtual") {
		t.Errorf("unknown user refused with %q, want 550 5.1.1 that tells nothing of the backend", refused)
	}
	if code, text := c.data(interopMessage("callout", "callout@sender.test")); code != 250 {
		t.Fatalf("DATA: %s", text)
	}
	waitMaildir(t, filepath.Join(vmail, "customer.test", "alice"), 1, 60*time.Second)
	if p.findLog("nobody@customer.test") == "" {
		t.Fatalf("postfix was never asked about nobody@customer.test:\n%s", p.log())
	}

	// The backend goes away: cached answers stay, a new recipient cannot
	// be verified.
	p.stop()
	c.cmd("MAIL FROM:<sender@sender.test>", 250)
	c.cmd("RCPT TO:<alice@customer.test>", 250)
	c.cmd("RCPT TO:<nobody@customer.test>", 550)
	if got := c.cmd("RCPT TO:<bob@customer.test>", 451); !strings.HasPrefix(got, "451 4.4.3") {
		t.Errorf("unverifiable recipient got %q, want 451 4.4.3", got)
	}
	c.cmd("QUIT", 221)
	if n := g.queueLen(); n != 0 {
		t.Errorf("%d messages in the queue (a bounce for the unknown user?), want 0", n)
	}
}
