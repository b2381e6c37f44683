package tlsupgrade

import (
	"crypto/tls"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/resolver"
)

// dialResumed delivers one message over a Dial with opts and returns
// whether the TLS session was resumed, and the Result.
func dialResumed(t testing.TB, addr string, opts Options) (bool, Result) {
	t.Helper()
	opts.LocalName = localName
	c, err := Dial(testContext(t), addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	cs, ok := c.TLSConnectionState()
	if !ok {
		t.Fatal("no TLS")
	}
	res := c.Result
	deliver(t, c)
	return cs.DidResume, res
}

func TestSessionResumption(t *testing.T) {
	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS 1.3", tls.VersionTLS13}, {"TLS 1.2", tls.VersionTLS12}} {
		t.Run(v.name, func(t *testing.T) {
			checkLeaks(t)
			ca := newTestCA(t)
			cert := ca.valid(t, "mx.test", "mx2.test")
			cfg := serverTLS(cert)
			cfg.MaxVersion = v.max
			ts := startServer(t, cfg, false)
			base := Options{ServerName: "mx.test", RootCAs: ca.pool, SessionCache: tls.NewLRUClientSessionCache(16)}
			for i, want := range []bool{false, true, true} {
				resumed, res := dialResumed(t, ts.addr, base)
				if resumed != want {
					t.Fatalf("connection %d: resumed %v, want %v", i+1, resumed, want)
				}
				if !res.Verified || res.VerifyError != "" || res.PeerName != "mx.test" {
					t.Errorf("connection %d (resumed %v): the certificate was not checked: %+v", i+1, resumed, res)
				}
			}

			// A session is never offered in another scope: each of
			// these starts with a full handshake, and its own session
			// is resumed by the next connection in the same scope.
			other := x509.NewCertPool()
			other.AddCert(ca.cert)
			tlsa := resolver.TLSA{Usage: 3, Selector: 0, MatchingType: 0, Data: cert.Certificate[0]} // DANE-EE
			sts := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSTesting, MX: []string{"mx.test"}}
			for name, o := range map[string]Options{
				"another server name": {ServerName: "mx2.test"},
				"other roots":         {RootCAs: other},
				"another level":       {Policy: Policy{Level: LevelVerify}},
				"DANE":                {Policy: Policy{Level: LevelDANE, TLSA: []resolver.TLSA{tlsa}}},
				"MTA-STS":             {Policy: Policy{MTASTS: sts}},
				"no resumption":       {NoSessionResumption: true},
			} {
				o.SessionCache = base.SessionCache
				if o.ServerName == "" {
					o.ServerName = base.ServerName
				}
				if o.RootCAs == nil {
					o.RootCAs = base.RootCAs
				}
				for i, want := range []bool{false, !o.NoSessionResumption} {
					resumed, res := dialResumed(t, ts.addr, o)
					if resumed != want {
						t.Errorf("%s, connection %d: resumed %v, want %v", name, i+1, resumed, want)
					}
					if !res.Verified || res.Failure != "" {
						t.Errorf("%s, connection %d (resumed %v): %+v", name, i+1, resumed, res)
					}
					if dane := o.Policy.Level == LevelDANE; res.DANEVerified != dane {
						t.Errorf("%s, connection %d (resumed %v): DANEVerified %v, want %v", name, i+1, resumed, res.DANEVerified, dane)
					}
				}
			}
		})
	}
}

// Without a SessionCache, sessions go to the process-wide cache.
func TestSessionResumptionByDefault(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	ts := startServer(t, serverTLS(ca.valid(t, "mx.test")), false)
	opts := Options{ServerName: "mx.test", RootCAs: ca.pool}
	dialResumed(t, ts.addr, opts)
	if resumed, _ := dialResumed(t, ts.addr, opts); !resumed {
		t.Fatal("the second connection did not resume the session from the shared cache")
	}
}

// A resumed session is checked against the policy of the connection that
// resumes it, with the certificate the session was made with: here a cache
// that ignores the scopes hands a session made with the right roots to
// connections with roots that do not trust the certificate, or with TLSA
// records that do not match it.
func TestResumedSessionIsChecked(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	cfg := serverTLS(ca.valid(t, "mx.test"))
	resumed := make(chan bool, 8) // what the server saw, per handshake
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		resumed <- cs.DidResume
		return nil
	}
	ts := startServer(t, cfg, false)
	serverResumed := func(t *testing.T) bool {
		t.Helper()
		select {
		case r := <-resumed:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("the server did not verify a handshake")
			return false
		}
	}
	cache := &anyScopeCache{}
	if r, _ := dialResumed(t, ts.addr, Options{ServerName: "mx.test", RootCAs: ca.pool, SessionCache: cache}); r || serverResumed(t) {
		t.Fatal("the first connection resumed a session")
	}

	untrusted := newTestCA(t).pool
	r, res := dialResumed(t, ts.addr, Options{ServerName: "mx.test", RootCAs: untrusted, SessionCache: cache})
	if !r || !serverResumed(t) {
		t.Fatal("the session was not resumed")
	}
	if res.Verified || res.VerifyError == "" || res.PeerName != "mx.test" {
		t.Errorf("a resumed session with untrusted roots: %+v, want a recorded verification failure", res)
	}

	wrong := resolver.TLSA{Usage: 3, Selector: 0, MatchingType: 0, Data: []byte("not the certificate")}
	for name, p := range map[string]Policy{
		"verify": {Level: LevelVerify},
		"dane":   {Level: LevelDANE, TLSA: []resolver.TLSA{wrong}},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Dial(testContext(t), ts.addr, Options{LocalName: localName, ServerName: "mx.test", RootCAs: untrusted,
				Policy: p, SessionCache: cache})
			if err == nil {
				c.Close()
				t.Fatalf("Dial succeeded: %+v", c.Result)
			}
			de := dialError(t, err, StageHandshake)
			if !serverResumed(t) {
				t.Fatal("the session was not resumed")
			}
			if de.Result.Failure == "" {
				t.Errorf("no failure recorded: %+v", de.Result)
			}
		})
	}
}

// anyScopeCache hands out the last session it was given for any key, and
// keeps it when crypto/tls drops it after a failed resumption.
type anyScopeCache struct {
	mu sync.Mutex
	cs *tls.ClientSessionState
}

func (c *anyScopeCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}

func (c *anyScopeCache) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs != nil {
		c.cs = cs
	}
}

// Every part of the scope changes it.
func TestSessionScope(t *testing.T) {
	ca := newTestCA(t)
	tlsa := resolver.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{1, 2, 3}}
	sts := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSEnforce, MX: []string{"mx.test"}}
	base := Options{ServerName: "mx.test"}
	seen := map[string]string{sessionScope("192.0.2.1:25", base): "base"}
	for name, v := range map[string]struct {
		addr string
		o    Options
	}{
		"address":      {"192.0.2.2:25", base},
		"port":         {"192.0.2.1:587", base},
		"server name":  {"192.0.2.1:25", Options{ServerName: "mx2.test"}},
		"implicit TLS": {"192.0.2.1:25", Options{ServerName: "mx.test", ImplicitTLS: true}},
		"roots":        {"192.0.2.1:25", Options{ServerName: "mx.test", RootCAs: ca.pool}},
		"level":        {"192.0.2.1:25", Options{ServerName: "mx.test", Policy: Policy{Level: LevelRequired}}},
		"TLSA":         {"192.0.2.1:25", Options{ServerName: "mx.test", Policy: Policy{Level: LevelDANE, TLSA: []resolver.TLSA{tlsa}}}},
		"DANE names": {"192.0.2.1:25", Options{ServerName: "mx.test",
			Policy: Policy{Level: LevelDANE, TLSA: []resolver.TLSA{tlsa}, DANENames: []string{"mx.example"}}}},
		"MTA-STS": {"192.0.2.1:25", Options{ServerName: "mx.test", Policy: Policy{Level: LevelMTASTS, MTASTS: sts}}},
		"MTA-STS mx": {"192.0.2.1:25", Options{ServerName: "mx.test", Policy: Policy{Level: LevelMTASTS,
			MTASTS: &MTASTSPolicy{Version: "STSv1", Mode: MTASTSEnforce, MX: []string{"*.test"}}}}},
	} {
		s := sessionScope(v.addr, v.o)
		if prev, ok := seen[s]; ok {
			t.Errorf("%s: the same scope as %s", name, prev)
		}
		seen[s] = name
	}
	if sessionScope("192.0.2.1:25", base) != sessionScope("192.0.2.1:25", Options{ServerName: "mx.test"}) {
		t.Error("the same options give another scope")
	}
}

// BenchmarkSTARTTLSResumption: a Dial (greeting, EHLO, STARTTLS, EHLO)
// and QUIT to a go-smtp server in this process, with a full handshake and
// with a resumed one. cpu-us/op is the process's CPU time per Dial, client
// and server together.
func BenchmarkSTARTTLSResumption(b *testing.B) {
	ca := newTestCA(b)
	ts := startServer(b, serverTLS(ca.valid(b, "mx.test")), false)
	for _, mode := range []struct {
		name   string
		resume bool
	}{{"full", false}, {"resumed", true}} {
		b.Run(mode.name, func(b *testing.B) {
			opts := Options{LocalName: localName, ServerName: "mx.test", RootCAs: ca.pool,
				SessionCache: tls.NewLRUClientSessionCache(8), NoSessionResumption: !mode.resume}
			dial := func() bool {
				c, err := Dial(testContext(b), ts.addr, opts)
				if err != nil {
					b.Fatal(err)
				}
				cs, _ := c.TLSConnectionState()
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
				return cs.DidResume
			}
			dial()
			cpu := testutil.SelfCPU()
			b.ResetTimer()
			for range b.N {
				if dial() != mode.resume {
					b.Fatalf("resumed: %v, want %v", !mode.resume, mode.resume)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((testutil.SelfCPU()-cpu).Microseconds())/float64(b.N), "cpu-us/op")
		})
	}
}
