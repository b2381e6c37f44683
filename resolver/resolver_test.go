package resolver

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/miekg/dns"
)

// newResolver returns a Resolver asking the given servers with a short
// timeout.
func newResolver(t *testing.T, servers ...string) *Resolver {
	t.Helper()
	r, err := New(servers, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// deadAddr returns a loopback UDP address where nothing listens, so that a
// query there fails at once with "connection refused".
func deadAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// errKind is what a test expects of an error.
type errKind int

const (
	noError errKind = iota
	permanent
	notFound // permanent and NotFound
	temporary
)

// checkErr checks err against kind, and that it wraps target when that is
// not nil.
func checkErr(t *testing.T, what string, err error, kind errKind, target error) {
	t.Helper()
	if kind == noError {
		if err != nil {
			t.Errorf("%s: unexpected error %v", what, err)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("%s: error %v (%T), want an *Error", what, err, err)
		return
	}
	if IsTemporary(err) != (kind == temporary) || IsNotFound(err) != (kind == notFound) {
		t.Errorf("%s: %v: temporary %v, not found %v; want kind %d", what, err, IsTemporary(err), IsNotFound(err), kind)
	}
	if target != nil && !errors.Is(err, target) {
		t.Errorf("%s: %v does not wrap %v", what, err, target)
	}
}

func TestNew(t *testing.T) {
	r, err := New([]string{"192.0.2.53", "[2001:db8::53]:5353"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.0.2.53:53", "[2001:db8::53]:5353"}; !slices.Equal(r.Servers, want) {
		t.Errorf("Servers = %q, want %q", r.Servers, want)
	}
	if r.timeout() != DefaultTimeout {
		t.Errorf("timeout() = %s, want %s", r.timeout(), DefaultTimeout)
	}
	if _, err := New([]string{"dns.example"}, 0); err == nil {
		t.Error("New accepted a host name as server")
	}
	if _, err := New([]string{"192.0.2.53"}, -time.Second); err == nil {
		t.Error("New accepted a negative timeout")
	}
}

func TestServersFromFile(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	os.WriteFile(conf, []byte("# comment\nsearch example\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:1\n"), 0o644)
	got, err := serversFromFile(conf)
	if want := []string{"192.0.2.53:53", "[2001:db8::53]:53"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("serversFromFile = %q, %v; want %q", got, err, want)
	}

	empty := filepath.Join(dir, "empty.conf")
	os.WriteFile(empty, []byte("search example\n"), 0o644)
	if _, err := serversFromFile(empty); err == nil {
		t.Error("no error for a file without nameserver lines")
	}
	if _, err := serversFromFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("no error for a missing file")
	}
}

func TestLookupMX(t *testing.T) {
	s := testdns.Start(t)
	s.AddMX("example.test", 20, "MX2.example.test.")
	s.AddMX("example.test", 10, "mx1.example.test")
	s.AddMX("null.test", 0, ".")
	r := newResolver(t, s.Addr())

	got, err := r.LookupMX(context.Background(), "Example.Test")
	want := []MX{{Host: "mx2.example.test", Pref: 20}, {Host: "mx1.example.test", Pref: 10}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("LookupMX = %v, %v; want %v", got, err, want)
	}
	got, err = r.LookupMX(context.Background(), "null.test")
	if want := []MX{{Host: ".", Pref: 0}}; err != nil || !slices.Equal(got, want) {
		t.Errorf("LookupMX(null MX) = %v, %v; want %v", got, err, want)
	}
	_, err = r.LookupMX(context.Background(), "nxdomain.test")
	checkErr(t, "LookupMX(nxdomain)", err, notFound, nil)
}

func TestMXHosts(t *testing.T) {
	s := testdns.Start(t)
	// Sorted by preference, each host once (the lowest preference wins).
	s.AddMX("sorted.test", 30, "c.sorted.test")
	s.AddMX("sorted.test", 10, "a.sorted.test")
	s.AddMX("sorted.test", 20, "b.sorted.test")
	s.AddMX("sorted.test", 40, "a.sorted.test")
	// No MX: the domain itself, with an IPv4 or only an IPv6 address.
	s.AddA("implicit4.test", "192.0.2.1")
	s.AddAAAA("implicit6.test", "2001:db8::1")
	// No MX through a CNAME: the end of the chain is the mail host.
	s.AddCNAME("alias.test", "target.test")
	s.AddA("target.test", "192.0.2.2")
	// No MX and no address.
	s.AddTXT("nohost.test", "v=spf1 -all")
	// Null MX alone and among others.
	s.SetNullMX("null.test")
	s.AddMX("mixed.test", 10, "mx.mixed.test")
	s.AddMX("mixed.test", 0, ".")
	// MX target that is a CNAME: kept as named.
	s.AddMX("cnamemx.test", 10, "alias.cnamemx.test")
	s.AddCNAME("alias.cnamemx.test", "real.cnamemx.test")
	s.AddA("real.cnamemx.test", "192.0.2.3")
	// Failures.
	s.SetRcode("servfail.test", dns.TypeMX, dns.RcodeServerFailure)
	s.SetRcode("refused.test", 0, dns.RcodeRefused)
	s.SetRcode("implicitfail.test", dns.TypeA, dns.RcodeServerFailure)
	s.AddTXT("implicitfail.test", "exists")

	tests := []struct {
		domain string
		want   []MX
		kind   errKind
		target error
	}{
		{"sorted.test", []MX{{"a.sorted.test", 10, false}, {"b.sorted.test", 20, false}, {"c.sorted.test", 30, false}}, noError, nil},
		{"implicit4.test", []MX{{"implicit4.test", 0, true}}, noError, nil},
		{"implicit6.test", []MX{{"implicit6.test", 0, true}}, noError, nil},
		{"alias.test", []MX{{"target.test", 0, true}}, noError, nil},
		{"cnamemx.test", []MX{{"alias.cnamemx.test", 10, false}}, noError, nil},
		{"nohost.test", nil, notFound, ErrNoMailHost},
		{"null.test", nil, permanent, ErrNullMX},
		{"mixed.test", nil, permanent, ErrNullMX},
		{"nxdomain.test", nil, notFound, nil},
		{"servfail.test", nil, temporary, nil},
		{"refused.test", nil, temporary, nil},
		{"implicitfail.test", nil, temporary, nil},
		{"bad name.test", nil, permanent, ErrInvalidName},
	}
	r := newResolver(t, s.Addr())
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			got, _, err := r.MXHosts(context.Background(), tt.domain)
			checkErr(t, tt.domain, err, tt.kind, tt.target)
			if !slices.Equal(got, tt.want) {
				t.Errorf("MXHosts = %v, want %v", got, tt.want)
			}
		})
	}

	// The CNAME'd MX host resolves to the address behind the alias.
	ips, err := r.LookupIP(context.Background(), "alias.cnamemx.test")
	if err != nil || len(ips) != 1 || !ips[0].Equal(net.ParseIP("192.0.2.3")) {
		t.Errorf("LookupIP(alias.cnamemx.test) = %v, %v", ips, err)
	}
}

func TestMXHostsShuffle(t *testing.T) {
	s := testdns.Start(t)
	s.AddMX("example.test", 20, "backup.example.test")
	s.AddMX("example.test", 10, "a.example.test")
	s.AddMX("example.test", 10, "b.example.test")
	r := newResolver(t, s.Addr())

	// Each order of the two equal hosts has a chance of 1/2 per try: missing
	// one in 64 tries happens with probability 2^-63.
	seen := map[string]int{}
	for range 64 {
		hosts, _, err := r.MXHosts(context.Background(), "example.test")
		if err != nil {
			t.Fatal(err)
		}
		if len(hosts) != 3 || hosts[0].Pref != 10 || hosts[1].Pref != 10 || hosts[2].Host != "backup.example.test" {
			t.Fatalf("MXHosts = %v", hosts)
		}
		seen[hosts[0].Host+","+hosts[1].Host]++
	}
	if seen["a.example.test,b.example.test"] == 0 || seen["b.example.test,a.example.test"] == 0 {
		t.Errorf("equal preferences not shuffled: %v", seen)
	}
}

func TestMXHostsAuthenticated(t *testing.T) {
	s := testdns.Start(t)
	s.AddMX("secure.test", 10, "mx.secure.test")
	s.SetAuthenticated("secure.test", true)
	s.AddMX("insecure.test", 10, "mx.insecure.test")
	s.AddA("implicit.test", "192.0.2.1")
	s.SetAuthenticated("implicit.test", true)
	s.SetNullMX("null.test")
	s.SetAuthenticated("null.test", true)
	r := newResolver(t, s.Addr())

	for _, tt := range []struct {
		domain string
		want   bool
	}{
		{"secure.test", true},
		{"insecure.test", false},
		{"implicit.test", true},
		{"null.test", true},
	} {
		_, ad, _ := r.MXHosts(context.Background(), tt.domain)
		if ad != tt.want {
			t.Errorf("MXHosts(%s): authenticated %v, want %v", tt.domain, ad, tt.want)
		}
	}
}

func TestLookupIP(t *testing.T) {
	s := testdns.Start(t)
	s.AddA("both.test", "192.0.2.1")
	s.AddAAAA("both.test", "2001:db8::1")
	s.AddA("both.test", "192.0.2.2")
	s.AddA("v4fail6.test", "192.0.2.1")
	s.SetRcode("v4fail6.test", dns.TypeAAAA, dns.RcodeServerFailure)
	s.AddTXT("nodata.test", "x")
	s.AddTXT("halffail.test", "x")
	s.SetRcode("halffail.test", dns.TypeA, dns.RcodeServerFailure)
	r := newResolver(t, s.Addr())

	tests := []struct {
		host  string
		want  []string
		kind  errKind
		rcode int
	}{
		{"both.test", []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}, noError, 0},
		{"v4fail6.test", []string{"192.0.2.1"}, noError, 0}, // addresses win over a failure
		{"nodata.test", nil, notFound, dns.RcodeSuccess},
		{"nxdomain.test", nil, notFound, dns.RcodeNameError},
		{"halffail.test", nil, temporary, dns.RcodeServerFailure},
	}
	for _, tt := range tests {
		ips, err := r.LookupIP(context.Background(), tt.host)
		checkErr(t, tt.host, err, tt.kind, nil)
		var got []string
		for _, ip := range ips {
			got = append(got, ip.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("LookupIP(%s) = %v, want %v", tt.host, got, tt.want)
		}
		var e *Error
		if errors.As(err, &e) && e.Rcode != tt.rcode {
			t.Errorf("LookupIP(%s): Rcode %d, want %d", tt.host, e.Rcode, tt.rcode)
		}
	}
}

func TestLookupTXT(t *testing.T) {
	s := testdns.Start(t)
	s.AddTXT("_mta-sts.example.test", "v=STSv1; ", "id=20240101")
	s.AddTXT("_mta-sts.example.test", "second")
	s.AddTXT("long.test", strings.Repeat("a", 255), strings.Repeat("b", 100))
	r := newResolver(t, s.Addr())

	got, err := r.LookupTXT(context.Background(), "_mta-sts.example.test")
	if want := []string{"v=STSv1; id=20240101", "second"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("LookupTXT = %q, %v; want %q", got, err, want)
	}
	got, err = r.LookupTXT(context.Background(), "long.test")
	if err != nil || len(got) != 1 || got[0] != strings.Repeat("a", 255)+strings.Repeat("b", 100) {
		t.Errorf("LookupTXT(long) = %q, %v", got, err)
	}
	_, err = r.LookupTXT(context.Background(), "_mta-sts.missing.test")
	checkErr(t, "LookupTXT(missing)", err, notFound, nil)
}

func TestLookupTLSA(t *testing.T) {
	s := testdns.Start(t)
	data := []byte{0x01, 0x02, 0xfe, 0xff}
	s.AddTLSA("_25._tcp.secure.test", 3, 1, 1, data)
	s.AddTLSA("_25._tcp.secure.test", 2, 0, 2, []byte{0xaa})
	s.SetAuthenticated("_25._tcp.secure.test", true)
	s.AddTLSA("_25._tcp.insecure.test", 3, 1, 1, data)
	s.AddA("nodane.test", "192.0.2.1")
	s.SetAuthenticated("_25._tcp.nodane.test", true) // a validated denial
	s.SetRcode("_25._tcp.broken.test", dns.TypeTLSA, dns.RcodeServerFailure)
	r := newResolver(t, s.Addr())
	ctx := context.Background()

	recs, ad, err := r.LookupTLSA(ctx, "_25._tcp.secure.test")
	want := []TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: data}, {Usage: 2, Selector: 0, MatchingType: 2, Data: []byte{0xaa}}}
	if err != nil || !ad || !slices.EqualFunc(recs, want, equalTLSA) {
		t.Errorf("secure: %v, %v, %v; want %v, true", recs, ad, err, want)
	}
	recs, ad, err = r.LookupTLSA(ctx, "_25._tcp.insecure.test")
	if err != nil || ad || len(recs) != 1 {
		t.Errorf("insecure: %v, %v, %v; want one record, not authenticated", recs, ad, err)
	}
	_, ad, err = r.LookupTLSA(ctx, "_25._tcp.nodane.test")
	checkErr(t, "nodane", err, notFound, nil)
	if !ad {
		t.Error("nodane: authenticated denial not reported")
	}
	_, ad, err = r.LookupTLSA(ctx, "_25._tcp.broken.test")
	checkErr(t, "broken", err, temporary, nil)
	if ad {
		t.Error("broken: authenticated with an error")
	}
}

func equalTLSA(a, b TLSA) bool {
	return a.Usage == b.Usage && a.Selector == b.Selector && a.MatchingType == b.MatchingType && string(a.Data) == string(b.Data)
}

func TestServerFailover(t *testing.T) {
	good := testdns.Start(t)
	good.AddMX("example.test", 10, "mx.example.test")
	failing := testdns.Start(t)
	failing.SetRcode("example.test", 0, dns.RcodeServerFailure)
	refusing := testdns.Start(t)
	refusing.SetRcode("example.test", 0, dns.RcodeRefused)
	dead := deadAddr(t)
	ctx := context.Background()

	for _, servers := range [][]string{
		{dead, good.Addr()},
		{failing.Addr(), good.Addr()},
		{refusing.Addr(), dead, good.Addr()},
	} {
		mxs, err := newResolver(t, servers...).LookupMX(ctx, "example.test")
		if err != nil || len(mxs) != 1 {
			t.Errorf("servers %v: %v, %v", servers, mxs, err)
		}
	}

	// NXDOMAIN is an answer: the next server is not asked.
	before := good.Queries("nxdomain.test", dns.TypeMX)
	_, err := newResolver(t, failing.Addr(), refusing.Addr()).LookupMX(ctx, "nxdomain.test")
	checkErr(t, "nxdomain", err, notFound, nil)
	if good.Queries("nxdomain.test", dns.TypeMX) != before {
		t.Error("asked another server after NXDOMAIN")
	}

	// When every server fails, the last one's failure is reported.
	_, err = newResolver(t, dead, failing.Addr()).LookupMX(ctx, "example.test")
	checkErr(t, "all failing", err, temporary, nil)
	var e *Error
	if errors.As(err, &e) && (e.Server != failing.Addr() || e.Rcode != dns.RcodeServerFailure) {
		t.Errorf("all failing: server %q rcode %d; want %q SERVFAIL", e.Server, e.Rcode, failing.Addr())
	}
	_, err = newResolver(t, failing.Addr(), dead).LookupMX(ctx, "example.test")
	checkErr(t, "dead last", err, temporary, nil)
	if errors.As(err, &e) && (e.Server != dead || e.Rcode != -1) {
		t.Errorf("dead last: server %q rcode %d; want %q -1", e.Server, e.Rcode, dead)
	}
}

func TestTruncationFallsBackToTCP(t *testing.T) {
	s := testdns.Start(t)
	s.AddTXT("forced.test", "over tcp")
	s.Truncate("forced.test")
	// Too big for 1232 bytes: truncated by size.
	for i := range 10 {
		s.AddTXT("big.test", strings.Repeat(string(rune('a'+i)), 200))
	}
	r := newResolver(t, s.Addr())

	got, err := r.LookupTXT(context.Background(), "forced.test")
	if err != nil || !slices.Equal(got, []string{"over tcp"}) {
		t.Errorf("forced: %q, %v", got, err)
	}
	if n := s.Queries("forced.test", dns.TypeTXT); n != 2 {
		t.Errorf("forced: %d queries, want 2 (UDP then TCP)", n)
	}
	got, err = r.LookupTXT(context.Background(), "big.test")
	if err != nil || len(got) != 10 {
		t.Errorf("big: %d records, %v; want 10", len(got), err)
	}
	if n := s.Queries("big.test", dns.TypeTXT); n != 2 {
		t.Errorf("big: %d queries, want 2 (UDP then TCP)", n)
	}
}

func TestContextEnds(t *testing.T) {
	s := testdns.Start(t)
	s.Drop("slow.test")
	r, err := New([]string{s.Addr()}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, _, err = r.MXHosts(ctx, "slow.test")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancel took %s", d)
	}
	checkErr(t, "canceled", err, temporary, context.Canceled)

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = r.LookupIP(ctx, "slow.test")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("deadline took %s", d)
	}
	checkErr(t, "deadline", err, temporary, context.DeadlineExceeded)

	// A context that has already ended asks nobody.
	_, err = r.LookupTXT(ctx, "other.test")
	checkErr(t, "ended", err, temporary, context.DeadlineExceeded)
	if n := s.Queries("other.test", dns.TypeTXT); n != 0 {
		t.Errorf("ended context: %d queries sent", n)
	}
}

func TestTimeoutTriesNextServer(t *testing.T) {
	slow := testdns.Start(t)
	slow.Drop("example.test")
	good := testdns.Start(t)
	good.AddMX("example.test", 10, "mx.example.test")
	r, err := New([]string{slow.Addr(), good.Addr()}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupMX(context.Background(), "example.test"); err != nil {
		t.Errorf("after a timeout: %v", err)
	}
	r.Servers = r.Servers[:1]
	_, err = r.LookupMX(context.Background(), "example.test")
	checkErr(t, "timeout", err, temporary, nil)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("timeout: %v is not a net.Error timeout", err)
	}
}

func TestIDNA(t *testing.T) {
	s := testdns.Start(t)
	s.AddMX("xn--bcher-kva.test", 10, "mx.xn--bcher-kva.test")
	s.AddA("xn--mnchen-3ya.test", "192.0.2.1")
	r := newResolver(t, s.Addr())

	hosts, _, err := r.MXHosts(context.Background(), "Bücher.test.")
	if want := []MX{{Host: "mx.xn--bcher-kva.test", Pref: 10}}; err != nil || !slices.Equal(hosts, want) {
		t.Errorf("MXHosts(Bücher.test) = %v, %v; want %v", hosts, err, want)
	}
	hosts, _, err = r.MXHosts(context.Background(), "münchen.test")
	if want := []MX{{Host: "xn--mnchen-3ya.test", Implicit: true}}; err != nil || !slices.Equal(hosts, want) {
		t.Errorf("MXHosts(münchen.test) = %v, %v; want %v", hosts, err, want)
	}
	_, err = r.LookupIP(context.Background(), "bad..name")
	checkErr(t, "bad name", err, permanent, ErrInvalidName)
}

func TestFollowCNAMEs(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	chain := []dns.RR{
		rr("b.test. CNAME c.test."),
		rr("A.test. CNAME B.test."),
		rr("c.test. A 192.0.2.1"),
		rr("other.test. A 192.0.2.9"),
	}
	end, found, ok := followCNAMEs(chain, "a.test.", dns.TypeA)
	if !ok || end != "c.test." || len(found) != 1 {
		t.Errorf("chain: %q %v %v", end, found, ok)
	}
	// An unfinished chain: the end is returned for the next query.
	end, found, ok = followCNAMEs(chain[:2], "a.test.", dns.TypeA)
	if !ok || end != "c.test." || len(found) != 0 {
		t.Errorf("unfinished: %q %v %v", end, found, ok)
	}
	loop := []dns.RR{rr("a.test. CNAME b.test."), rr("b.test. CNAME a.test.")}
	if _, _, ok := followCNAMEs(loop, "a.test.", dns.TypeA); ok {
		t.Error("loop not detected")
	}
}
