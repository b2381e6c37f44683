package tlsupgrade

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// Server names of the connection policies of a sessionServer.
const (
	policyMX     = "mx.example.test"     // one policy
	policySubmit = "submit.example.test" // another, with the same certificate
	policyMTLS   = "mtls.example.test"   // one that asks for client certificates
)

// sessionServer is a TLS server on a loopback listener whose config
// chooses a connection policy by SNI, as caddytls does, and resumes
// sessions from a cache; its certificate and clock can be changed.
type sessionServer struct {
	addr  string
	cache *ServerSessions // nil: no resumption (tickets off)

	mu   sync.Mutex
	cert *tls.Certificate
	now  time.Time
}

func newSessionServer(t testing.TB, cache *ServerSessions) *sessionServer {
	t.Helper()
	cert := testutil.SelfSigned(t, policyMX)
	s := &sessionServer{cert: &cert, now: time.Now(), cache: cache}
	if cache != nil {
		cache.now = func() time.Time {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.now
		}
	}
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cert, nil
	}
	policies := map[string]*tls.Config{
		policyMX:     {SessionTicketsDisabled: true, GetCertificate: getCert},
		policySubmit: {SessionTicketsDisabled: true, GetCertificate: getCert},
		policyMTLS:   {SessionTicketsDisabled: true, GetCertificate: getCert, ClientAuth: tls.RequestClientCert},
	}
	cfg := &tls.Config{SessionTicketsDisabled: true,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) { return policies[hello.ServerName], nil }}
	if cache != nil {
		cache.Resume(cfg)
	}
	s.addr = testutil.ServeLoopback(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if tc.Handshake() == nil {
			_, _ = tc.Write([]byte("k"))
			_, _ = tc.Read(make([]byte, 1)) // until the client closes
		}
	})
	return s
}

func (s *sessionServer) set(cert *tls.Certificate, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cert, s.now = cert, now
}

// connect makes one connection to the policy with the client session
// cache and returns whether it resumed and the leaf certificate of the
// session.
func (s *sessionServer) connect(t testing.TB, cache tls.ClientSessionCache, policy string) (bool, []byte) {
	t.Helper()
	c, err := tls.Dial("tcp", s.addr, &tls.Config{ServerName: policy, InsecureSkipVerify: true, ClientSessionCache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Reading the server's first byte reads the session ticket before it.
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	st := c.ConnectionState()
	return st.DidResume, st.PeerCertificates[0].Raw
}

// lastSession is a client session cache that offers the last session it
// was given for any server name, and keeps it when crypto/tls drops it.
type lastSession struct {
	mu sync.Mutex
	cs *tls.ClientSessionState
	n  int // sessions given
}

func (c *lastSession) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}

func (c *lastSession) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs != nil {
		c.cs = cs
		c.n++
	}
}

// replay makes the cache offer cs again, whatever it was given since.
func (c *lastSession) replay(cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cs = cs
}

func (c *lastSession) last() (*tls.ClientSessionState, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.n
}

func TestSessionCacheTakeOnce(t *testing.T) {
	sc := NewServerSessions(0, 0)
	id := sc.put([]byte("state"), nil, sha256.Sum256([]byte("leaf")))
	if cs := sc.take(id); cs == nil || string(cs.state) != "state" {
		t.Fatalf("take = %+v, want the session", cs)
	}
	if cs := sc.take(id); cs != nil {
		t.Fatal("a session was taken twice")
	}
	if n := sc.len(); n != 0 {
		t.Fatalf("%d sessions left, want none", n)
	}
}

// A client that offers the same session again gets a full handshake.
func TestSessionCacheSingleUse(t *testing.T) {
	s := newSessionServer(t, NewServerSessions(0, 0))
	client := &lastSession{}
	s.connect(t, client, policyMX)
	first, _ := client.last()
	if resumed, _ := s.connect(t, client, policyMX); !resumed {
		t.Fatal("the session was not resumed")
	}
	client.replay(first)
	if resumed, _ := s.connect(t, client, policyMX); resumed {
		t.Fatal("a session was resumed a second time")
	}
}

func TestSessionCacheCertificateChange(t *testing.T) {
	s := newSessionServer(t, NewServerSessions(0, 0))
	client := tls.NewLRUClientSessionCache(1)
	s.connect(t, client, policyMX)
	if resumed, _ := s.connect(t, client, policyMX); !resumed {
		t.Fatal("the session was not resumed")
	}
	renewed := testutil.SelfSigned(t, policyMX)
	s.set(&renewed, time.Now())
	resumed, leaf := s.connect(t, client, policyMX)
	if resumed {
		t.Fatal("a session made with the old certificate was resumed after the certificate changed")
	}
	if !bytes.Equal(leaf, renewed.Certificate[0]) {
		t.Fatal("the full handshake did not present the new certificate")
	}
	if resumed, _ := s.connect(t, client, policyMX); !resumed {
		t.Fatal("a session made with the new certificate was not resumed")
	}
}

// A session is resumed only under the connection policy it was made with,
// and a policy that asks for client certificates sends no tickets.
func TestSessionCachePolicies(t *testing.T) {
	s := newSessionServer(t, NewServerSessions(0, 0))
	client := &lastSession{}
	s.connect(t, client, policyMX)
	if resumed, _ := s.connect(t, client, policySubmit); resumed {
		t.Fatal("a session made under one connection policy was resumed under another")
	}
	if resumed, _ := s.connect(t, client, policySubmit); !resumed {
		t.Fatal("a session was not resumed under its own connection policy")
	}
	_, given := client.last()
	if resumed, _ := s.connect(t, client, policyMTLS); resumed {
		t.Fatal("a session was resumed under a policy that asks for client certificates")
	}
	if _, n := client.last(); n != given {
		t.Fatal("a policy that asks for client certificates sent a session ticket")
	}
}

func TestSessionCacheLifetime(t *testing.T) {
	s := newSessionServer(t, NewServerSessions(0, time.Hour))
	client := tls.NewLRUClientSessionCache(1)
	start := time.Now()
	s.connect(t, client, policyMX)
	s.set(s.cert, start.Add(59*time.Minute))
	if resumed, _ := s.connect(t, client, policyMX); !resumed {
		t.Fatal("a session was not resumed within its lifetime")
	}
	s.set(s.cert, start.Add(59*time.Minute+time.Hour))
	if resumed, _ := s.connect(t, client, policyMX); resumed {
		t.Fatal("a session was resumed after its lifetime")
	}
}

func TestSessionCacheBounded(t *testing.T) {
	s := newSessionServer(t, NewServerSessions(2, 0))
	clients := make([]tls.ClientSessionCache, 3)
	for i := range clients {
		clients[i] = tls.NewLRUClientSessionCache(1)
		s.connect(t, clients[i], policyMX)
	}
	if n := s.cache.len(); n != 2 {
		t.Fatalf("the cache holds %d sessions, want at most 2", n)
	}
	if resumed, _ := s.connect(t, clients[0], policyMX); resumed {
		t.Fatal("the oldest session was resumed although the cache was full")
	}
	if resumed, _ := s.connect(t, clients[2], policyMX); !resumed {
		t.Fatal("the newest session was not resumed")
	}
}

// BenchmarkInboundHandshake: TLS handshakes with a server's config, with
// tickets off (smtpapp's default: every handshake is a full one) and
// resumed from ServerSessions. cpu-us/op is the process's CPU time per
// handshake, client and server together.
func BenchmarkInboundHandshake(b *testing.B) {
	for _, mode := range []struct {
		name  string
		cache func() *ServerSessions
	}{{"full", func() *ServerSessions { return nil }}, {"resumed", func() *ServerSessions { return NewServerSessions(0, 0) }}} {
		b.Run(mode.name, func(b *testing.B) {
			s := newSessionServer(b, mode.cache())
			client := tls.NewLRUClientSessionCache(1)
			s.connect(b, client, policyMX)
			cpu := testutil.SelfCPU()
			b.ResetTimer()
			for range b.N {
				if resumed, _ := s.connect(b, client, policyMX); resumed != (s.cache != nil) {
					b.Fatalf("resumed: %v", resumed)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((testutil.SelfCPU()-cpu).Microseconds())/float64(b.N), "cpu-us/op")
		})
	}
}
