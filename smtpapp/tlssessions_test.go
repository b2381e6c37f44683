package smtpapp_test

import (
	"bytes"
	"crypto/tls"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// resumeServer starts the mx server with the given tls_session_cache
// (nil: the default, none) and returns its STARTTLS address.
func resumeServer(t *testing.T, e *testEnv, cache map[string]any) string {
	t.Helper()
	srv := map[string]any{"max_connections_per_ip": -1, "connection_rate_per_ip": -1}
	if cache != nil {
		srv["tls_session_cache"] = cache
	}
	return e.start(srv)[0]
}

// tlsSession runs greeting, EHLO, STARTTLS (with cfg), EHLO, NOOP and QUIT,
// and returns whether the TLS session was resumed. The replies after the
// handshake make the client read the server's session ticket.
func tlsSession(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	st := d.startTLS(cfg)
	d.cmd("EHLO client.example", "250")
	d.cmd("NOOP", "250 2.0.0 OK")
	d.cmd("QUIT", "221")
	return st.DidResume
}

func TestTLSSessionResumption(t *testing.T) {
	e := newTestEnv(t)
	addr := resumeServer(t, e, map[string]any{})
	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS 1.3", tls.VersionTLS13}, {"TLS 1.2", tls.VersionTLS12}} {
		t.Run(v.name, func(t *testing.T) {
			cfg := &tls.Config{ServerName: testHost, RootCAs: e.rootPool(), MaxVersion: v.max,
				ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			if tlsSession(t, addr, cfg) {
				t.Fatal("the first connection resumed a session")
			}
			for i := range 2 {
				if !tlsSession(t, addr, cfg) {
					t.Fatalf("connection %d did not resume the session of the one before", i+2)
				}
			}
		})
	}

	t.Run("a session is resumed once", func(t *testing.T) {
		first := &firstSessionCache{}
		cfg := &tls.Config{ServerName: testHost, RootCAs: e.rootPool(), ClientSessionCache: first}
		tlsSession(t, addr, cfg)
		if !tlsSession(t, addr, cfg) {
			t.Fatal("the second connection did not resume the first session")
		}
		if tlsSession(t, addr, cfg) {
			t.Fatal("the first session was resumed a second time")
		}
	})
}

// Without tls_session_cache nothing is resumed: no tickets are sent.
func TestTLSSessionResumptionOffByDefault(t *testing.T) {
	e := newTestEnv(t)
	addr := resumeServer(t, e, nil)
	cache := &firstSessionCache{}
	cfg := &tls.Config{ServerName: testHost, RootCAs: e.rootPool(), ClientSessionCache: cache}
	for range 2 {
		if tlsSession(t, addr, cfg) {
			t.Fatal("a session was resumed without tls_session_cache")
		}
	}
	if cache.stored() {
		t.Fatal("the server sent a session ticket without tls_session_cache")
	}
}

// firstSessionCache keeps the first session it is given, whatever comes
// after.
type firstSessionCache struct {
	mu sync.Mutex
	cs *tls.ClientSessionState
}

func (c *firstSessionCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}

func (c *firstSessionCache) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil && cs != nil {
		c.cs = cs
	}
}

func (c *firstSessionCache) stored() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs != nil
}

// OpenSSL's client resumes a session it saved with -sess_out.
func TestTLSSessionResumptionOpenSSL(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	e := newTestEnv(t)
	addr := resumeServer(t, e, map[string]any{})
	sess := filepath.Join(t.TempDir(), "session.pem")
	run := func(flag string) string {
		t.Helper()
		cmd := exec.Command(openssl, "s_client", "-connect", addr, "-starttls", "smtp",
			"-servername", testHost, "-crlf", flag, sess)
		cmd.Stdin = strings.NewReader("QUIT\n")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("openssl s_client %s: %v\n%s", flag, err, out.String())
		}
		return out.String()
	}
	if out := run("-sess_out"); !strings.Contains(out, "\nNew, TLSv1.3") {
		t.Fatalf("first connection: want a new TLS 1.3 session:\n%s", out)
	}
	if out := run("-sess_in"); !strings.Contains(out, "\nReused, TLSv1.3") {
		t.Fatalf("second connection: want the saved session reused:\n%s", out)
	}
}
