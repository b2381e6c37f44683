// Package testdns is a DNS server on loopback for tests. It answers like a
// recursive resolver would: it follows CNAMEs among its own records, says
// NXDOMAIN for a name it knows nothing about and NOERROR with no answer
// (NODATA) for a known name without records of the asked type. Records and
// failure modes can be changed while it runs.
package testdns

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ttl is the TTL of the records added by the Add* helpers.
const ttl = 300

// maxCNAMEs bounds the chain the server follows, so that loops end.
const maxCNAMEs = 8

// Server is a DNS server bound to the same port on 127.0.0.1 for UDP and TCP.
// All methods are safe to call while queries are being answered.
type Server struct {
	t    testing.TB
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu        sync.Mutex
	records   map[string][]dns.RR // owner (canonical) -> records
	rcodes    map[query]int       // forced response codes
	authentic map[string]bool     // owners whose answers may carry AD
	truncate  map[string]bool     // owners answered with TC over UDP
	drop      map[string]bool     // owners never answered
	counts    map[query]int       // queries received
	closeOnce sync.Once
}

// query is a (name, type) pair; type 0 stands for every type in rcodes.
type query struct {
	name  string
	qtype uint16
}

// Start binds UDP and TCP on one free port of 127.0.0.1, serves until the
// test ends, and fails the test if it cannot bind.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		t:         t,
		records:   make(map[string][]dns.RR),
		rcodes:    make(map[query]int),
		authentic: make(map[string]bool),
		truncate:  make(map[string]bool),
		drop:      make(map[string]bool),
		counts:    make(map[query]int),
	}
	pc, ln, err := listenPair()
	if err != nil {
		t.Fatalf("testdns: %v", err)
	}
	s.addr = pc.LocalAddr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: s.handler(true)}
	s.tcp = &dns.Server{Listener: ln, Handler: s.handler(false)}
	t.Cleanup(s.Close)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { failed <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-failed:
			t.Fatalf("testdns: serving: %v", err)
		}
	}
	return s
}

// listenPair binds a UDP port and then TCP on the same port, trying again
// with another port when that TCP port is taken.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("no port free for both UDP and TCP: %w", lastErr)
}

// Addr returns the "127.0.0.1:port" that both UDP and TCP listen on.
func (s *Server) Addr() string { return s.addr }

// Close stops the server; queries get no answer afterwards. Start
// registers it with t.Cleanup; calling it again does nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.udp.ShutdownContext(ctx)
		s.tcp.ShutdownContext(ctx)
		// Also when a server never started, which ShutdownContext skips.
		s.udp.PacketConn.Close()
		s.tcp.Listener.Close()
	})
}

// Add adds a record in zone file syntax, e.g. "example. 60 IN MX 10 mx.example.";
// a relative owner name is taken as fully qualified. It fails the test on a
// syntax error.
func (s *Server) Add(rr string) {
	s.t.Helper()
	r, err := dns.NewRR(rr)
	if err != nil || r == nil {
		s.t.Fatalf("testdns: record %q: %v", rr, err)
	}
	s.addRR(r)
}

// AddMX adds an MX record: name prefers host with preference pref.
func (s *Server) AddMX(name string, pref uint16, host string) {
	s.addRR(&dns.MX{Hdr: s.hdr(name, dns.TypeMX), Preference: pref, Mx: dns.Fqdn(host)})
}

// SetNullMX replaces the MX records of name with the null MX of RFC 7505
// ("0 .").
func (s *Server) SetNullMX(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	owner := dns.CanonicalName(name)
	kept := s.records[owner][:0:0]
	for _, rr := range s.records[owner] {
		if rr.Header().Rrtype != dns.TypeMX {
			kept = append(kept, rr)
		}
	}
	s.records[owner] = append(kept, &dns.MX{Hdr: s.hdr(name, dns.TypeMX), Preference: 0, Mx: "."})
}

// AddA adds an A record; ip must be an IPv4 address.
func (s *Server) AddA(name, ip string) {
	s.t.Helper()
	addr := net.ParseIP(ip).To4()
	if addr == nil {
		s.t.Fatalf("testdns: AddA %s: %q is not an IPv4 address", name, ip)
	}
	s.addRR(&dns.A{Hdr: s.hdr(name, dns.TypeA), A: addr})
}

// AddAAAA adds an AAAA record; ip must be an IPv6 address.
func (s *Server) AddAAAA(name, ip string) {
	s.t.Helper()
	addr := net.ParseIP(ip)
	if addr == nil || addr.To4() != nil {
		s.t.Fatalf("testdns: AddAAAA %s: %q is not an IPv6 address", name, ip)
	}
	s.addRR(&dns.AAAA{Hdr: s.hdr(name, dns.TypeAAAA), AAAA: addr})
}

// AddTXT adds one TXT record made of the given character strings (each at
// most 255 bytes).
func (s *Server) AddTXT(name string, txt ...string) {
	s.addRR(&dns.TXT{Hdr: s.hdr(name, dns.TypeTXT), Txt: txt})
}

// AddTLSA adds a TLSA record with the given certificate usage, selector,
// matching type and association data.
func (s *Server) AddTLSA(name string, usage, selector, matching uint8, data []byte) {
	s.addRR(&dns.TLSA{Hdr: s.hdr(name, dns.TypeTLSA), Usage: usage, Selector: selector,
		MatchingType: matching, Certificate: hex.EncodeToString(data)})
}

// AddCNAME makes name an alias of target.
func (s *Server) AddCNAME(name, target string) {
	s.addRR(&dns.CNAME{Hdr: s.hdr(name, dns.TypeCNAME), Target: dns.Fqdn(target)})
}

// SetRcode makes queries for (name, qtype) fail with rcode, e.g.
// dns.RcodeServerFailure; qtype 0 means every type. dns.RcodeSuccess undoes
// it.
func (s *Server) SetRcode(name string, qtype uint16, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := query{dns.CanonicalName(name), qtype}
	if rcode == dns.RcodeSuccess {
		delete(s.rcodes, q)
		return
	}
	s.rcodes[q] = rcode
}

// SetAuthenticated sets whether answers about name carry the AD bit, as a
// validating resolver's would. AD is only set when the query had the DO or
// AD bit (RFC 6840 section 5.7), and, after CNAMEs, only when every name of
// the chain is authenticated.
func (s *Server) SetAuthenticated(name string, authenticated bool) {
	s.setFlag(s.authentic, name, authenticated)
}

// Truncate makes UDP answers for name empty with the TC bit, so that the
// client has to ask again over TCP; TCP answers are complete.
func (s *Server) Truncate(name string) {
	s.setFlag(s.truncate, name, true)
}

// Drop makes the server ignore queries for name (over UDP and TCP), so that
// the client times out.
func (s *Server) Drop(name string) {
	s.setFlag(s.drop, name, true)
}

// setFlag sets a per-name switch under the lock.
func (s *Server) setFlag(flags map[string]bool, name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	flags[dns.CanonicalName(name)] = on
}

// Remove forgets name: its records, forced response codes, AD, truncation and
// drop settings. Its query counts stay.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	owner := dns.CanonicalName(name)
	delete(s.records, owner)
	delete(s.authentic, owner)
	delete(s.truncate, owner)
	delete(s.drop, owner)
	for q := range s.rcodes {
		if q.name == owner {
			delete(s.rcodes, q)
		}
	}
}

// Queries returns how many queries for (name, qtype) the server received,
// over UDP and TCP together (a truncated UDP answer and the TCP retry count
// as two). Names are compared case-insensitively.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[query{dns.CanonicalName(name), qtype}]
}

func (s *Server) hdr(name string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: dns.CanonicalName(name), Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

func (s *Server) addRR(rr dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := rr.Header()
	h.Name = dns.CanonicalName(h.Name)
	s.records[h.Name] = append(s.records[h.Name], rr)
}

// handler answers queries arriving over UDP (udp true) or TCP.
func (s *Server) handler(udp bool) dns.HandlerFunc {
	return func(w dns.ResponseWriter, req *dns.Msg) {
		resp, ok := s.answer(req, udp)
		if !ok {
			return
		}
		if opt := req.IsEdns0(); opt != nil {
			resp.SetEdns0(1232, opt.Do())
			if udp {
				resp.Truncate(int(opt.UDPSize()))
			}
		} else if udp {
			resp.Truncate(dns.MinMsgSize)
		}
		w.WriteMsg(resp)
	}
}

// answer builds the response to req; ok is false when the query is dropped.
func (s *Server) answer(req *dns.Msg, udp bool) (resp *dns.Msg, ok bool) {
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[query{name, q.Qtype}]++
	if s.drop[name] {
		return nil, false
	}
	resp = new(dns.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = true
	if rcode, ok := s.rcodes[query{name, q.Qtype}]; ok {
		resp.Rcode = rcode
		return resp, true
	}
	if rcode, ok := s.rcodes[query{name, 0}]; ok {
		resp.Rcode = rcode
		return resp, true
	}
	if udp && s.truncate[name] {
		resp.Truncated = true
		return resp, true
	}

	wantsAD := req.AuthenticatedData
	if opt := req.IsEdns0(); opt != nil && opt.Do() {
		wantsAD = true
	}
	authenticated := wantsAD
	cur := name
	for hops := 0; ; hops++ {
		if hops > maxCNAMEs {
			// A loop or a chain too long: what a recursive resolver says.
			resp.Answer = nil
			resp.Rcode = dns.RcodeServerFailure
			return resp, true
		}
		authenticated = authenticated && s.authentic[cur]
		cname := s.collect(resp, cur, q.Qtype)
		if cname == nil {
			break
		}
		resp.Answer = append(resp.Answer, dns.Copy(cname))
		cur = dns.CanonicalName(cname.Target)
	}
	if !s.exists(cur) {
		resp.Rcode = dns.RcodeNameError
	}
	resp.AuthenticatedData = authenticated
	return resp, true
}

// collect appends the records of qtype that owner has to resp's answer, and
// returns owner's CNAME when it has one and qtype is not CNAME itself. The
// caller holds s.mu.
func (s *Server) collect(resp *dns.Msg, owner string, qtype uint16) *dns.CNAME {
	var cname *dns.CNAME
	for _, rr := range s.records[owner] {
		switch rr.Header().Rrtype {
		case qtype:
			resp.Answer = append(resp.Answer, dns.Copy(rr))
		case dns.TypeCNAME:
			cname = rr.(*dns.CNAME)
		}
	}
	return cname
}

// exists reports whether name owns records or is an empty non-terminal (a
// name below it owns records). The caller holds s.mu.
func (s *Server) exists(name string) bool {
	if len(s.records[name]) > 0 {
		return true
	}
	for owner, rrs := range s.records {
		if len(rrs) > 0 && strings.HasSuffix(owner, "."+name) {
			return true
		}
	}
	return false
}
