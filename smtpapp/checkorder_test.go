package smtpapp_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"sync/atomic"
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

// subjectTagger is a test message check that marks every message as a
// spam filter does: the Subject replaced by a tagged one, and a header
// field added.
type subjectTagger struct{ subject string }

func (subjectTagger) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.checks.test_tagger", New: func() caddy.Module { return new(subjectTagger) }}
}

func (t *subjectTagger) StartMessage(*MessageInput) MessageJudge { return &taggerJudge{} }

type taggerJudge struct{ head strings.Builder }

func (j *taggerJudge) Write(p []byte) (int, error) {
	if j.head.Len() < 4096 {
		j.head.Write(p)
	}
	return len(p), nil
}

func (j *taggerJudge) Finish(context.Context) Verdict {
	subject := ""
	for _, line := range strings.Split(j.head.String(), "\r\n") {
		if v, ok := strings.CutPrefix(line, "Subject: "); ok {
			subject = v
			break
		}
	}
	return Verdict{Result: VerdictAccept, Headers: []HeaderField{{Name: "Subject", Value: "[SPAM] " + subject}, {Name: "X-Spam-Flag", Value: "YES"}},
		RemoveHeaders: []string{"subject"}}
}

func (j *taggerJudge) Abort() {}

func init() { caddy.RegisterModule(subjectTagger{}) }

// TestCheckReplacesHeader: a message check that replaces the Subject and
// adds a field: the delivered message has one Subject, the new one, and
// the new field; the body is unchanged.
func TestCheckReplacesHeader(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"checks": []any{map[string]any{"check": "test_tagger"}},
		}},
	}))
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.sendMail("a@sender.test", "u@example.test", "Subject: cheap pills\r\nFrom: a@sender.test\r\n\r\nSubject: kept in the body")
	d.cmd("QUIT", "221")
	b, err := os.ReadFile(e.waitMail("example.test", "u", 1)[0])
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(b), "\r\n\r\n")
	if strings.Count(head, "Subject:") != 1 || !strings.Contains(head, "Subject: [SPAM] cheap pills\r\n") || !strings.Contains(head, "X-Spam-Flag: YES\r\n") {
		t.Errorf("header:\n%s", head)
	}
	if body != "Subject: kept in the body\r\n" {
		t.Errorf("body %q", body)
	}
}

// closeCounter counts Close calls.
type closeCounter struct{ n *atomic.Int32 }

func (c closeCounter) Close() error { c.n.Add(1); return nil }

// stateful is a test check that keeps a value in the transaction at RCPT
// and counts its Close.
type stateful struct{}

var statefulClosed atomic.Int32

func (stateful) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.checks.test_stateful", New: func() caddy.Module { return new(stateful) }}
}

type statefulKey struct{}

func (stateful) CheckRecipient(_ context.Context, in *CheckInput) Verdict {
	if in.Tx.Value(statefulKey{}) == nil {
		in.Tx.SetValue(statefulKey{}, closeCounter{&statefulClosed})
	}
	return Accept()
}

func init() { caddy.RegisterModule(stateful{}) }

// TestTransactionValuesClosed: a value a check keeps in the transaction
// is shared by its recipients and closed once when the transaction ends:
// at RSET, after DATA, and when the connection closes mid-transaction.
func TestTransactionValuesClosed(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"checks": []any{map[string]any{"check": "test_stateful"}},
		}},
	}))
	statefulClosed.Store(0)
	d := dial(t, addrsOf(app, "mx")[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<u@example.test>", "250")
	d.cmd("RCPT TO:<v@example.test>", "250")
	d.cmd("RSET", "250")
	if n := statefulClosed.Load(); n != 1 {
		t.Fatalf("after RSET: closed %d times, want 1", n)
	}
	d.sendMail("a@sender.test", "u@example.test", "Subject: x\r\n\r\nbody")
	// go-smtp resets the transaction after it has written DATA's reply,
	// so the 250 may reach us first.
	eventually(t, "the value closed after DATA", func() bool { return statefulClosed.Load() == 2 })
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<u@example.test>", "250")
	d.conn.Close()
	eventually(t, "the value closed when the connection went", func() bool { return statefulClosed.Load() == 3 })
}
