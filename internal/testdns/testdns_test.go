package testdns

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ask sends one query over network ("udp" or "tcp"); with ad, it sets the AD
// bit; with edns, it adds an OPT record with the DO bit.
func ask(t *testing.T, s *Server, network, name string, qtype uint16, ad, edns bool) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.AuthenticatedData = ad
	if edns {
		q.SetEdns0(1232, true)
	}
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(q, s.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return resp
}

func TestSamePortForUDPAndTCP(t *testing.T) {
	s := Start(t)
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addr() = %q", s.Addr())
	}
	s.AddA("example.test", "192.0.2.1")
	for _, network := range []string{"udp", "tcp"} {
		resp := ask(t, s, network, "example.test", dns.TypeA, false, false)
		if len(resp.Answer) != 1 {
			t.Errorf("%s: answer %v", network, resp.Answer)
		}
	}
	if n := s.Queries("EXAMPLE.test", dns.TypeA); n != 2 {
		t.Errorf("Queries = %d, want 2", n)
	}
}

func TestAnswers(t *testing.T) {
	s := Start(t)
	s.AddMX("example.test", 10, "mx.example.test")
	s.AddCNAME("mx.example.test", "host.example.test")
	s.AddA("host.example.test", "192.0.2.1")
	s.AddAAAA("host.example.test", "2001:db8::1")
	s.AddTXT("_25._tcp.deep.example.test", "v=1")
	s.AddCNAME("dangling.example.test", "nowhere.example.test")
	s.Add("loop1.example.test. 60 IN CNAME loop2.example.test.")
	s.AddCNAME("loop2.example.test", "loop1.example.test")
	s.SetRcode("broken.example.test", 0, dns.RcodeServerFailure)
	s.SetRcode("example.test", dns.TypeTXT, dns.RcodeRefused)

	tests := []struct {
		name    string
		qtype   uint16
		rcode   int
		answers int
	}{
		{"example.test", dns.TypeMX, dns.RcodeSuccess, 1},
		{"example.test", dns.TypeA, dns.RcodeSuccess, 0},                 // NODATA
		{"example.test", dns.TypeTXT, dns.RcodeRefused, 0},               // forced for one type
		{"unknown.test", dns.TypeA, dns.RcodeNameError, 0},               // NXDOMAIN
		{"mx.example.test", dns.TypeA, dns.RcodeSuccess, 2},              // CNAME + A
		{"mx.example.test", dns.TypeCNAME, dns.RcodeSuccess, 1},          // the CNAME itself
		{"deep.example.test", dns.TypeA, dns.RcodeSuccess, 0},            // empty non-terminal
		{"dangling.example.test", dns.TypeA, dns.RcodeNameError, 1},      // CNAME to nowhere
		{"loop1.example.test", dns.TypeA, dns.RcodeServerFailure, 0},     // CNAME loop
		{"broken.example.test", dns.TypeMX, dns.RcodeServerFailure, 0},   // forced for all types
		{"_25._tcp.deep.example.test", dns.TypeTXT, dns.RcodeSuccess, 1}, // underscore labels
		{"HOST.Example.Test", dns.TypeAAAA, dns.RcodeSuccess, 1},         // case-insensitive
	}
	for _, tt := range tests {
		resp := ask(t, s, "udp", tt.name, tt.qtype, false, true)
		if resp.Rcode != tt.rcode || len(resp.Answer) != tt.answers {
			t.Errorf("%s %s: rcode %s, %d answers; want %s, %d", tt.name, dns.TypeToString[tt.qtype],
				dns.RcodeToString[resp.Rcode], len(resp.Answer), dns.RcodeToString[tt.rcode], tt.answers)
		}
	}

	s.SetRcode("broken.example.test", 0, dns.RcodeSuccess)
	if resp := ask(t, s, "udp", "broken.example.test", dns.TypeMX, false, false); resp.Rcode != dns.RcodeNameError {
		t.Errorf("after undoing SetRcode: %s, want NXDOMAIN", dns.RcodeToString[resp.Rcode])
	}
}

func TestNullMX(t *testing.T) {
	s := Start(t)
	s.AddMX("example.test", 10, "mx.example.test")
	s.SetNullMX("example.test")
	resp := ask(t, s, "udp", "example.test", dns.TypeMX, false, false)
	if len(resp.Answer) != 1 || resp.Answer[0].(*dns.MX).Mx != "." {
		t.Fatalf("answer %v, want only the null MX", resp.Answer)
	}
}

func TestAuthenticated(t *testing.T) {
	s := Start(t)
	s.AddTLSA("_25._tcp.mx.example.test", 3, 1, 1, []byte{0xde, 0xad})
	s.AddCNAME("alias.example.test", "_25._tcp.mx.example.test")
	s.AddCNAME("insecure.example.test", "_25._tcp.mx.example.test")
	s.SetAuthenticated("_25._tcp.mx.example.test", true)
	s.SetAuthenticated("alias.example.test", true)

	tests := []struct {
		name     string
		ad, edns bool
		want     bool
	}{
		{"_25._tcp.mx.example.test", false, false, false}, // not asked for
		{"_25._tcp.mx.example.test", true, false, true},   // AD in the query
		{"_25._tcp.mx.example.test", false, true, true},   // DO in the query
		{"alias.example.test", true, true, true},          // whole chain secure
		{"insecure.example.test", true, true, false},      // one link is not
	}
	for _, tt := range tests {
		resp := ask(t, s, "udp", tt.name, dns.TypeTLSA, tt.ad, tt.edns)
		if resp.AuthenticatedData != tt.want {
			t.Errorf("%s ad=%v do=%v: AD %v, want %v", tt.name, tt.ad, tt.edns, resp.AuthenticatedData, tt.want)
		}
	}
	resp := ask(t, s, "tcp", "_25._tcp.mx.example.test", dns.TypeTLSA, true, true)
	if tlsa := resp.Answer[0].(*dns.TLSA); tlsa.Certificate != "dead" || tlsa.Usage != 3 {
		t.Errorf("TLSA %v", tlsa)
	}
}

func TestTruncation(t *testing.T) {
	s := Start(t)
	s.AddA("forced.test", "192.0.2.1")
	s.Truncate("forced.test")
	if resp := ask(t, s, "udp", "forced.test", dns.TypeA, false, true); !resp.Truncated || len(resp.Answer) != 0 {
		t.Errorf("udp: TC %v, %d answers; want TC and none", resp.Truncated, len(resp.Answer))
	}
	if resp := ask(t, s, "tcp", "forced.test", dns.TypeA, false, true); resp.Truncated || len(resp.Answer) != 1 {
		t.Errorf("tcp: TC %v, %d answers; want the record", resp.Truncated, len(resp.Answer))
	}

	// An answer larger than the client's buffer is truncated for real.
	for range 8 {
		s.AddTXT("big.test", strings.Repeat("x", 250))
	}
	if resp := ask(t, s, "udp", "big.test", dns.TypeTXT, false, false); !resp.Truncated {
		t.Errorf("udp without EDNS: %d bytes not truncated", resp.Len())
	}
	if resp := ask(t, s, "tcp", "big.test", dns.TypeTXT, false, false); len(resp.Answer) != 8 {
		t.Errorf("tcp: %d answers, want 8", len(resp.Answer))
	}
}

func TestDropAndRemove(t *testing.T) {
	s := Start(t)
	s.AddA("quiet.test", "192.0.2.1")
	s.Drop("quiet.test")
	q := new(dns.Msg).SetQuestion("quiet.test.", dns.TypeA)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	if _, _, err := c.Exchange(q, s.Addr()); err == nil {
		t.Fatal("dropped query was answered")
	}
	s.Remove("quiet.test")
	if resp := ask(t, s, "udp", "quiet.test", dns.TypeA, false, false); resp.Rcode != dns.RcodeNameError {
		t.Errorf("after Remove: %s, want NXDOMAIN", dns.RcodeToString[resp.Rcode])
	}
	if n := s.Queries("quiet.test", dns.TypeA); n != 2 {
		t.Errorf("Queries = %d, want 2", n)
	}
}

func TestClose(t *testing.T) {
	s := Start(t)
	s.AddA("example.test", "192.0.2.1")
	s.Close()
	s.Close()
	c := &dns.Client{Net: "tcp", Timeout: time.Second}
	if _, _, err := c.Exchange(new(dns.Msg).SetQuestion("example.test.", dns.TypeA), s.Addr()); err == nil {
		t.Error("closed server answered over TCP")
	}
}
