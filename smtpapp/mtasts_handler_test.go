package smtpapp_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/modules/mtasts"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

func TestMTASTSHandlerServesParsablePolicy(t *testing.T) {
	e := newTestEnv(t)
	e.start(map[string]any{})
	h := &mtasts.Handler{}
	ctx := caddy.ActiveContext()
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusTeapot)
		return nil
	})
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, httptest.NewRequest("GET", "https://mta-sts.example.test/.well-known/mta-sts.txt", nil), next); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	body, _ := io.ReadAll(rec.Body)
	p, err := tlsupgrade.ParseMTASTSPolicy(body)
	if err != nil {
		t.Fatalf("our own parser rejects the policy we serve: %v\n%s", err, body)
	}
	if p.Mode != tlsupgrade.MTASTSEnforce || !slices.Contains(p.MX, testHost) || p.MaxAge.Hours() != 168 || !p.Matches(testHost) {
		t.Fatalf("policy %+v", p)
	}
	if len(h.ID()) != 16 {
		t.Errorf("policy id %q", h.ID())
	}
	// Other paths go on to the next handler.
	rec = httptest.NewRecorder()
	_ = h.ServeHTTP(rec, httptest.NewRequest("GET", "https://mta-sts.example.test/other", nil), next)
	if rec.Code != http.StatusTeapot {
		t.Fatalf("other path: status %d", rec.Code)
	}
}
