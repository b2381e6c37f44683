package tlsupgrade

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testPolicy = "version: STSv1\r\nmode: enforce\r\nmx: *.mx.test\r\nmax_age: 86400\r\n"

func TestMTASTSFetch(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	h := &policyHandler{body: testPolicy}
	ph := startPolicyHost(t, ca, "example.test", h)

	p, err := ph.fetcher.Fetch(testContext(t), "Example.Test.")
	if err != nil {
		t.Fatal(err)
	}
	want := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSEnforce, MX: []string{"*.mx.test"}, MaxAge: 24 * time.Hour}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("policy = %+v, want %+v", p, want)
	}
	// Port 443 of the policy host, and nothing else.
	if addrs := ph.addrs(); !reflect.DeepEqual(addrs, []string{"mta-sts.example.test:443"}) {
		t.Errorf("dialled %q", addrs)
	}
	if got := PolicyURL("example.test"); got != "https://mta-sts.example.test/.well-known/mta-sts.txt" {
		t.Errorf("PolicyURL = %q", got)
	}
}

func TestMTASTSFetchFailures(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		name    string
		handler func(redirected *atomic.Int32) http.Handler
		ca      *testCA // the CA of the policy host; nil: ca
		hang    bool    // the host accepts the request and never answers (handler unused)
		timeout time.Duration
		result  string
		err     string
	}{
		{
			name: "redirect not followed",
			handler: func(redirected *atomic.Int32) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/elsewhere.txt" {
						redirected.Add(1)
						w.Header().Set("Content-Type", "text/plain")
						w.Write([]byte(testPolicy))
						return
					}
					http.Redirect(w, r, "/elsewhere.txt", http.StatusFound)
				})
			},
			result: ResultSTSPolicyFetchError, err: "redirects are not followed",
		},
		{
			name: "too large",
			handler: func(*atomic.Int32) http.Handler {
				return &policyHandler{body: testPolicy + "x-pad: " + strings.Repeat("a", 64<<10) + "\r\n"}
			},
			result: ResultSTSPolicyFetchError, err: "larger than 65536 bytes",
		},
		{
			name: "content type",
			handler: func(*atomic.Int32) http.Handler {
				return &policyHandler{body: testPolicy, contentType: "text/html"}
			},
			result: ResultSTSPolicyFetchError, err: `content type "text/html"`,
		},
		{
			name:    "not found",
			handler: func(*atomic.Int32) http.Handler { return &policyHandler{body: testPolicy, status: 404} },
			result:  ResultSTSPolicyFetchError, err: "status 404",
		},
		{
			name:    "invalid policy",
			handler: func(*atomic.Int32) http.Handler { return &policyHandler{body: "version: STSv1\r\nmode: enforce\r\n"} },
			result:  ResultSTSPolicyInvalid, err: "no max_age",
		},
		{
			name:    "untrusted certificate",
			handler: func(*atomic.Int32) http.Handler { return &policyHandler{body: testPolicy} },
			ca:      newTestCA(t),
			result:  ResultSTSWebPKIInvalid, err: "unknown authority",
		},
		{
			// The handler never answers while the fetch runs (it is let
			// go when the subtest ends): waiting for the request's
			// context instead let it answer an empty 200 once, in CI,
			// before the client's timeout.
			name:    "timeout",
			hang:    true,
			timeout: 300 * time.Millisecond,
			result:  ResultSTSPolicyFetchError, err: "Timeout",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			var redirected atomic.Int32
			hostCA := ca
			if tc.ca != nil {
				hostCA = tc.ca
			}
			var h http.Handler
			release := make(chan struct{})
			if tc.hang {
				h = http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release })
			} else {
				h = tc.handler(&redirected)
			}
			ph := startPolicyHost(t, hostCA, "example.test", h)
			t.Cleanup(func() { close(release) }) // before the server's Close, which waits for handlers
			ph.fetcher.RootCAs = ca.pool
			if tc.timeout > 0 {
				ph.fetcher.Timeout = tc.timeout
			}
			p, err := ph.fetcher.Fetch(testContext(t), "example.test")
			if err == nil {
				t.Fatalf("got %+v, want an error", p)
			}
			pe, ok := errors.AsType[*PolicyError](err)
			if !ok || pe.ResultType != tc.result || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("err = %v, want a %s error containing %q", err, tc.result, tc.err)
			}
			if n := redirected.Load(); n != 0 {
				t.Errorf("the redirect was followed %d times", n)
			}
		})
	}
}

func TestMTASTSFetchBadDomain(t *testing.T) {
	f := &MTASTSFetcher{}
	for _, d := range []string{"", "exa mple.test", "example.test/x", "example.test:8443", "a..b"} {
		if _, err := f.Fetch(testContext(t), d); err == nil {
			t.Errorf("Fetch(%q) succeeded", d)
		}
	}
}
