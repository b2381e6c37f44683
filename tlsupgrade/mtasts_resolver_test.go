package tlsupgrade

import (
	"context"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// TestMTASTSFetchUsesResolver: with Resolver set, the policy host is found
// through it (a name the system resolver cannot know), the connection goes
// to the address it gave on port 443, and the certificate is still checked
// for mta-sts.<domain>.
func TestMTASTSFetchUsesResolver(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	ph := startPolicyHost(t, ca, "resolved.test", &policyHandler{body: testPolicy})
	srv, r := newDNS(t)
	srv.AddA("mta-sts.resolved.test", "127.0.0.1")
	f := &MTASTSFetcher{RootCAs: ca.pool, Timeout: ph.fetcher.Timeout, Resolver: r, DialContext: portOf(ph)}

	p, err := f.Fetch(testContext(t), "resolved.test")
	if err != nil {
		t.Fatalf("fetch through the resolver: %v", err)
	}
	if p.Mode != MTASTSEnforce {
		t.Errorf("policy %+v", p)
	}
	if got := ph.addrs(); !reflect.DeepEqual(got, []string{"127.0.0.1:443"}) {
		t.Errorf("dialled %q, want the resolved address on port 443", got)
	}
	if srv.Queries("mta-sts.resolved.test", dns.TypeA) == 0 {
		t.Error("the resolver was not asked for mta-sts.resolved.test")
	}

	// The name decides the certificate check, not the address: a policy
	// host whose certificate is for another name is refused.
	other := startPolicyHost(t, ca, "other.test", &policyHandler{body: testPolicy})
	srv.AddA("mta-sts.wrongcert.test", "127.0.0.1")
	f = &MTASTSFetcher{RootCAs: ca.pool, Timeout: ph.fetcher.Timeout, Resolver: r, DialContext: portOf(other)}
	_, err = f.Fetch(testContext(t), "wrongcert.test")
	if pe, ok := err.(*PolicyError); !ok || pe.ResultType != ResultSTSWebPKIInvalid {
		t.Errorf("certificate for another name: %v, want %s", err, ResultSTSWebPKIInvalid)
	}

	// A name the resolver does not know fails, without the system
	// resolver being asked instead.
	f = &MTASTSFetcher{RootCAs: ca.pool, Timeout: ph.fetcher.Timeout, Resolver: r, DialContext: portOf(ph)}
	if _, err := f.Fetch(testContext(t), "unknown.test"); err == nil || !strings.Contains(err.Error(), "mta-sts.unknown.test") {
		t.Errorf("unknown policy host: %v", err)
	}
}

// portOf returns a DialContext that keeps the host it is given but
// replaces port 443 with the port of the test policy host, and records the
// address it was asked for in ph: a name would go to the system resolver.
func portOf(ph *policyHost) func(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, _ := net.SplitHostPort(ph.srv.Listener.Addr().String())
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ph.mu.Lock()
		ph.dialled = append(ph.dialled, addr)
		ph.mu.Unlock()
		host, p, err := net.SplitHostPort(addr)
		if err != nil || p != "443" {
			return nil, &net.AddrError{Err: "policy host dialled on a port other than 443", Addr: addr}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(host, port))
	}
}
