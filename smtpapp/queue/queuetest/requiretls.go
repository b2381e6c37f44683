package queuetest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/caddy-smtp/caddy-smtp/internal/dsntest"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// envelopeTarget accepts every recipient and records the envelope and body
// of each message it is handed; it is its own session.
type envelopeTarget struct {
	mu  sync.Mutex
	got []handedOver
}

type handedOver struct {
	from       string
	requireTLS bool
	body       string
}

func (e *envelopeTarget) Destination(*queue.Message, string) string { return "" }

func (e *envelopeTarget) Open(context.Context, string) (queue.Session, error) { return e, nil }

func (e *envelopeTarget) Deliver(_ context.Context, m *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	out := make([]queue.Result, len(rcpts))
	b, err := m.OpenBody()
	if err != nil {
		for i := range out {
			out[i].Err = queue.TempFail("opening body", err)
		}
		return out
	}
	body, _ := io.ReadAll(b)
	b.Close()
	e.mu.Lock()
	e.got = append(e.got, handedOver{from: m.From, requireTLS: m.RequireTLS, body: string(body)})
	e.mu.Unlock()
	for i := range out {
		out[i] = queue.Result{Reply: "250 ok", Action: "delivered"}
	}
	return out
}

func (e *envelopeTarget) LogFields() []zap.Field { return nil }
func (e *envelopeTarget) Usable() bool           { return true }
func (e *envelopeTarget) Close() error           { return nil }

func (e *envelopeTarget) handedOver() []handedOver {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]handedOver(nil), e.got...)
}

// testREQUIRETLSBounce: the DSN about a REQUIRETLS message sent with
// RET=FULL is queued with REQUIRETLS and returns the header only (RFC 8689
// section 5); the DSN about the same message without REQUIRETLS returns it
// whole and is queued without the flag.
func testREQUIRETLSBounce(t *testing.T, open OpenFunc) {
	for _, requireTLS := range []bool{true, false} {
		t.Run(fmt.Sprintf("requiretls=%v", requireTLS), func(t *testing.T) {
			q := openQueue(t, open, t.TempDir())
			f := newFake(func(string, int) queue.Result {
				return queue.Result{Err: &queue.DeliveryError{Code: 550, Enhanced: "5.1.1", Message: "no such user"}}
			})
			bounces := &envelopeTarget{}
			q.Attach(routeBounces(f, bounces), testConfig(), zaptest.NewLogger(t))
			id := queue.NewID()
			w, err := q.Create(id)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(w, "Subject: confidential\r\nMessage-ID: <%s@test>\r\n\r\nthe secret body\r\n", id)
			if err := q.Commit(w, &queue.Message{From: "s@sender.test", Arrived: time.Now(), RequireTLS: requireTLS, Ret: "FULL",
				Recipients: []*queue.Recipient{{Addr: "bad@example.test"}}}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "DSN", func() bool { return len(bounces.handedOver()) == 1 && q.Len() == 0 })
			d := bounces.handedOver()[0]
			if d.from != "" || d.requireTLS != requireTLS {
				t.Fatalf("DSN envelope: from %q, REQUIRETLS %v; want <> and %v", d.from, d.requireTLS, requireTLS)
			}
			p, err := dsntest.Parse(strings.NewReader(d.body))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(p.Original), "Message-ID: <"+id+"@test>") {
				t.Errorf("DSN does not return the original header: %q", p.Original)
			}
			if returned := strings.Contains(d.body, "the secret body"); returned == requireTLS {
				t.Errorf("body returned: %v (%s)\n%s", returned, p.OriginalType, d.body)
			}
		})
	}
}
