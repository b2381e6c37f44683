package tlsupgrade

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/resolver"
)

// startStripper starts a man in the middle on 127.0.0.1 that relays to
// backend and overwrites "STARTTLS" in what the server sends with
// "XXXXXXXA", as STARTTLS-stripping middleboxes do. It returns its address.
func startStripper(t testing.TB, backend string) string {
	t.Helper()
	return serveLoopback(t, func(g *connGroup, client net.Conn) {
		defer client.Close()
		server, err := net.Dial("tcp", backend)
		if err != nil {
			return
		}
		g.track(server)
		g.wg.Go(func() {
			io.Copy(server, client)
			server.Close()
		})
		buf := make([]byte, 32<<10)
		for {
			// go-smtp writes each reply in one go, so on loopback a
			// keyword never spans two reads.
			n, err := server.Read(buf)
			if n > 0 {
				out := bytes.ReplaceAll(buf[:n], []byte("STARTTLS"), []byte("XXXXXXXA"))
				if _, err := client.Write(out); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}

// policyHost is an HTTPS server on loopback that plays mta-sts.<domain>,
// and a fetcher that reaches it.
type policyHost struct {
	srv     *httptest.Server
	fetcher *MTASTSFetcher

	mu      sync.Mutex
	dialled []string
}

// startPolicyHost serves h over HTTPS with a certificate from ca for
// mta-sts.<domain>. The fetcher trusts ca and dials the server whatever the
// address, which it records.
func startPolicyHost(t testing.TB, ca *testCA, domain string, h http.Handler) *policyHost {
	t.Helper()
	ph := &policyHost{srv: httptest.NewUnstartedServer(h)}
	ph.srv.TLS = serverTLS(ca.valid(t, "mta-sts."+domain))
	ph.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake errors are the point of some tests
	ph.srv.StartTLS()
	t.Cleanup(ph.srv.Close)
	ph.fetcher = &MTASTSFetcher{
		RootCAs: ca.pool,
		Timeout: 5 * time.Second,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ph.mu.Lock()
			ph.dialled = append(ph.dialled, addr)
			ph.mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, network, ph.srv.Listener.Addr().String())
		},
	}
	return ph
}

// addrs returns the addresses the fetcher asked for.
func (ph *policyHost) addrs() []string {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return append([]string(nil), ph.dialled...)
}

// policyHandler serves a policy file as text/plain and counts requests.
type policyHandler struct {
	mu          sync.Mutex
	body        string
	contentType string
	status      int
	requests    int
}

func (h *policyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	if r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	ct := h.contentType
	if ct == "" {
		ct = "text/plain"
	}
	w.Header().Set("Content-Type", ct)
	if h.status != 0 {
		w.WriteHeader(h.status)
	}
	io.WriteString(w, h.body)
}

func (h *policyHandler) set(status int, body string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status, h.body = status, body
}

func (h *policyHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests
}

// newDNS starts a loopback DNS server and a resolver that asks it.
func newDNS(t testing.TB) (*testdns.Server, *resolver.Resolver) {
	t.Helper()
	s := testdns.Start(t)
	r, err := resolver.New([]string{s.Addr()}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

// dialTo returns a DialContext that connects to addr whatever it is asked
// for, so that Dial can be given an MX host name.
func dialTo(addr string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// leafOf returns the parsed leaf of a tls.Certificate.
func leafOf(t testing.TB, cert tls.Certificate) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}
