package mx

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtptargets/smtpclient"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

type noMetrics struct{}

func (noMetrics) CountDeliveries([]queue.Result, string, string) {}
func (noMetrics) CountFallback(tlsupgrade.Result)                {}

// TestMTASTSThroughTargetResolver: the target's resolvers are the only DNS
// that knows the .test domains, their policy hosts included. The policies
// are fetched (from the address those resolvers gave, on port 443) and
// enforced: the MX that the policy lists gets a session at level mta-sts,
// the MX that it does not list is never contacted.
func TestMTASTSThroughTargetResolver(t *testing.T) {
	ca := testutil.NewCA(t)
	mxSrv := testutil.StartAuthServer(t, ca.Issue(t, "mx.listed.test", "mx.unlisted.test"), "u", "p")
	_, mxPort, _ := net.SplitHostPort(mxSrv.Addr)

	policies := map[string]string{
		"mta-sts.listed.test":   "version: STSv1\r\nmode: enforce\r\nmx: mx.listed.test\r\nmax_age: 86400\r\n",
		"mta-sts.unlisted.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n",
	}
	https := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := policies[r.Host]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(body))
	}))
	https.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "mta-sts.listed.test", "mta-sts.unlisted.test")}}
	https.StartTLS()
	t.Cleanup(https.Close)
	_, httpsPort, _ := net.SplitHostPort(https.Listener.Addr().String())

	dns := testdns.Start(t)
	for _, d := range []string{"listed.test", "unlisted.test"} {
		dns.AddMX(d, 10, "mx."+d)
		dns.AddA("mx."+d, "127.0.0.1")
		dns.AddTXT("_mta-sts."+d, "v=STSv1; id=1")
		dns.AddA("mta-sts."+d, "127.0.0.1")
	}

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	m := &MX{Resolvers: []string{dns.Addr()}, Port: mustAtoi(t, mxPort), CAFile: ca.PEMFile(t), ConnectTimeout: caddy.Duration(5 * time.Second)}
	if err := m.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.ProvisionTarget(smtpapp.TargetEnv{Hostname: "gateway.test", Logger: zap.NewNop(), Metrics: noMetrics{},
		Storage: &certmagic.FileStorage{Path: t.TempDir()}, TLSReports: &tlsupgrade.TLSRPTRecorder{}}); err != nil {
		t.Fatal(err)
	}
	m.logger = zap.NewNop()
	// The fetcher the target built, with two test hooks: our CA, and
	// port 443 moved to the test server's port. The host it is given is
	// kept, so a name would go to the system resolver and fail.
	var mu sync.Mutex
	var dialled []string
	f := m.PolicyCache().Fetcher
	f.RootCAs = ca.Pool
	f.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, addr)
		mu.Unlock()
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port != "443" {
			return nil, errors.New("policy host dialled on " + addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(host, httpsPort))
	}

	sess, err := m.Open(ctx, "listed.test")
	if err != nil {
		t.Fatalf("listed MX: %v", err)
	}
	res := sess.(*smtpclient.Session).Result()
	sess.Close()
	if res.Level != tlsupgrade.LevelMTASTS || !res.Verified {
		t.Errorf("listed MX: level %q, verified %v; want the enforced MTA-STS policy", res.Level, res.Verified)
	}

	_, err = m.Open(ctx, "unlisted.test")
	var de *queue.DeliveryError
	if !errors.As(err, &de) || !de.Temporary || !strings.Contains(err.Error(), tlsupgrade.ErrMXNotInPolicy.Error()) {
		t.Errorf("unlisted MX: %v; want a deferral because the policy does not list it", err)
	}
	if n := mxSrv.Handshakes.Load(); n != 1 {
		t.Errorf("%d TLS sessions with the MX; want 1 (the listed one only)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dialled) != 2 || dialled[0] != "127.0.0.1:443" || dialled[1] != "127.0.0.1:443" {
		t.Errorf("policy hosts dialled at %q; want 127.0.0.1:443 twice (from the target's resolver)", dialled)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
