package resolver

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// maxCNAMEs bounds the CNAME links followed inside one answer, and the
// queries made to chase a chain that an answer left unfinished.
const maxCNAMEs = 8

var errCNAMEChain = errors.New("CNAME chain too long or looping")

// MX is one mail exchanger of a domain.
type MX struct {
	// Host is the exchanger's name, lowercased, without the trailing dot.
	// LookupMX reports a null MX target (RFC 7505) as "."; MXHosts never
	// returns one.
	Host string
	// Pref is the MX preference: lower is tried first.
	Pref uint16
	// Implicit is set by MXHosts when the domain has no MX records and the
	// domain itself is the mail host (RFC 5321 section 5.1).
	Implicit bool
}

// TLSA is one TLSA record (RFC 6698), as used by DANE for SMTP (RFC 7672).
type TLSA struct {
	// Usage is the certificate usage: 2 DANE-TA, 3 DANE-EE (0 and 1 are not
	// used for SMTP).
	Usage uint8
	// Selector is 0 for the full certificate, 1 for its SubjectPublicKeyInfo.
	Selector uint8
	// MatchingType is 0 for exact data, 1 for SHA-256, 2 for SHA-512.
	MatchingType uint8
	// Data is the certificate association data.
	Data []byte
}

// answer is the outcome of one lookup, across a CNAME chain.
type answer struct {
	rrs           []dns.RR // records of the asked type, owned by canonical
	name          string   // the name asked for (fully qualified)
	canonical     string   // the end of the CNAME chain, or name
	server        string   // the server of the last answer
	authenticated bool     // every answer on the way had the AD bit
}

// lookup asks for (name, qtype) and follows CNAMEs. Records of qtype that
// the answer holds for the end of the chain are returned; when the chain ends
// at a name the answer holds nothing for, that name is asked in turn. NXDOMAIN
// and NODATA are NotFound errors; the answer's name, canonical and
// authenticated are filled in for them too.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16, dnssecOK bool) (answer, error) {
	qname, err := canonicalName(name)
	if err != nil {
		return answer{}, &Error{Name: name, Type: typeName(qtype), Rcode: -1, Err: err}
	}
	a := answer{name: qname, canonical: qname, authenticated: true}
	for range maxCNAMEs {
		resp, server, err := r.exchange(ctx, a.canonical, qtype, dnssecOK)
		if err != nil {
			return answer{name: qname}, err
		}
		asked := a.canonical
		a.server = server
		a.authenticated = a.authenticated && resp.AuthenticatedData
		end, rrs, ok := followCNAMEs(resp.Answer, asked, qtype)
		if !ok {
			break
		}
		a.canonical = end
		switch {
		case len(rrs) > 0:
			a.rrs = rrs
			return a, nil
		case resp.Rcode == dns.RcodeNameError:
			return a, a.permanentError(qtype, resp.Rcode, true, errNXDomain)
		case end == asked:
			return a, a.permanentError(qtype, resp.Rcode, true, errNoData)
		}
		// The chain ends at a name this answer says nothing about: ask it.
	}
	// A recursive server answers SERVFAIL to a CNAME loop; so do we.
	return answer{name: qname}, &Error{Name: presentation(qname), Type: typeName(qtype),
		Server: a.server, Rcode: -1, Temporary: true, Err: errCNAMEChain}
}

// permanentError returns a permanent *Error about the name of a.
func (a answer) permanentError(qtype uint16, rcode int, notFound bool, cause error) *Error {
	return &Error{Name: presentation(a.name), Type: typeName(qtype), Server: a.server,
		Rcode: rcode, NotFound: notFound, Err: cause}
}

// followCNAMEs walks the CNAME chain from name through the answer section
// and returns its end with the records of qtype that end owns. ok is false
// for a chain longer than maxCNAMEs (or a loop).
func followCNAMEs(rrs []dns.RR, name string, qtype uint16) (end string, found []dns.RR, ok bool) {
	end = name
	for range maxCNAMEs + 1 {
		next := ""
		for _, rr := range rrs {
			h := rr.Header()
			if h.Class != dns.ClassINET || !strings.EqualFold(h.Name, end) {
				continue
			}
			if h.Rrtype == qtype {
				found = append(found, rr)
			} else if cname, isCNAME := rr.(*dns.CNAME); isCNAME {
				next = cname.Target
			}
		}
		if len(found) > 0 || next == "" {
			return end, found, true
		}
		end = dns.CanonicalName(next)
	}
	return end, nil, false
}

// LookupMX returns the MX records of domain as they are, in answer order:
// no sorting, no null MX handling, no implicit MX. For delivery use MXHosts.
func (r *Resolver) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	a, err := r.lookup(ctx, domain, dns.TypeMX, true)
	if err != nil {
		return nil, err
	}
	return mxRecords(a.rrs), nil
}

func mxRecords(rrs []dns.RR) []MX {
	mxs := make([]MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		host := presentation(mx.Mx)
		if host == "" {
			host = "."
		}
		mxs = append(mxs, MX{Host: host, Pref: mx.Preference})
	}
	return mxs
}

// LookupIP returns the IPv4 (A) and IPv6 (AAAA) addresses of host, IPv4
// first; both types are asked at the same time and CNAMEs are followed. When
// one type has addresses and the other fails, the addresses are returned
// without an error. With no address, the error is temporary if either
// lookup failed temporarily, and NotFound (NXDOMAIN rather than NODATA when
// either said so) otherwise.
func (r *Resolver) LookupIP(ctx context.Context, host string) ([]net.IP, error) {
	if _, err := canonicalName(host); err != nil {
		return nil, &Error{Name: host, Type: "A", Rcode: -1, Err: err}
	}
	qtypes := [2]uint16{dns.TypeA, dns.TypeAAAA}
	var (
		results [2]answer
		errs    [2]error
		wg      sync.WaitGroup
	)
	for i, qtype := range qtypes {
		wg.Go(func() { results[i], errs[i] = r.lookup(ctx, host, qtype, false) })
	}
	wg.Wait()

	var ips []net.IP
	for _, a := range results {
		for _, rr := range a.rrs {
			switch rr := rr.(type) {
			case *dns.A:
				ips = append(ips, rr.A)
			case *dns.AAAA:
				ips = append(ips, rr.AAAA)
			}
		}
	}
	if len(ips) > 0 {
		return ips, nil
	}
	return nil, worseError(errs[0], errs[1])
}

// LookupA returns the IPv4 addresses of name (A records, CNAMEs
// followed), as a DNS blocklist answers; a name that does not exist is a
// NotFound error.
func (r *Resolver) LookupA(ctx context.Context, name string) ([]net.IP, error) {
	if _, err := canonicalName(name); err != nil {
		return nil, &Error{Name: name, Type: "A", Rcode: -1, Err: err}
	}
	a, err := r.lookup(ctx, name, dns.TypeA, false)
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for _, rr := range a.rrs {
		if rr, ok := rr.(*dns.A); ok {
			ips = append(ips, rr.A)
		}
	}
	return ips, nil
}

// LookupPTR returns the names that the reverse zone gives for ip (PTR
// records of in-addr.arpa or ip6.arpa, CNAMEs followed), without the
// trailing dot, lowercased.
func (r *Resolver) LookupPTR(ctx context.Context, ip net.IP) ([]string, error) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return nil, &Error{Name: ip.String(), Type: "PTR", Rcode: -1, Err: err}
	}
	a, err := r.lookup(ctx, rev, dns.TypePTR, false)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, rr := range a.rrs {
		if rr, ok := rr.(*dns.PTR); ok {
			names = append(names, strings.ToLower(strings.TrimSuffix(rr.Ptr, ".")))
		}
	}
	return names, nil
}

// worseError picks the error to report when neither address type was found:
// a temporary failure beats NXDOMAIN, which beats NODATA.
func worseError(a, b error) error {
	rank := func(err error) int {
		var e *Error
		switch {
		case !errors.As(err, &e):
			return 0
		case e.Temporary:
			return 3
		case e.NotFound && e.Rcode == dns.RcodeNameError:
			return 2
		default:
			return 1
		}
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// LookupTXT returns the TXT records of name, each record's strings joined
// without a separator (as RFC 7208 and RFC 8461 want), in answer order.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	a, err := r.lookup(ctx, name, dns.TypeTXT, false)
	if err != nil {
		return nil, err
	}
	txts := make([]string, 0, len(a.rrs))
	for _, rr := range a.rrs {
		txts = append(txts, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return txts, nil
}

// LookupTLSA returns the TLSA records of name (e.g. "_25._tcp.mx.example")
// and whether the answer was authenticated: the AD bit of every response on
// the way, asked for with both DO and AD set (RFC 6840 section 5.7). DANE
// (RFC 7672) may only use records with authenticated true. authenticated is
// also reported with a NotFound error, so that a validated denial of TLSA
// records can be told from an unvalidated one. Records whose data is not
// valid hex are skipped.
func (r *Resolver) LookupTLSA(ctx context.Context, name string) (recs []TLSA, authenticated bool, err error) {
	a, err := r.lookup(ctx, name, dns.TypeTLSA, true)
	if err != nil {
		return nil, a.authenticated, err
	}
	for _, rr := range a.rrs {
		t := rr.(*dns.TLSA)
		data, err := hex.DecodeString(t.Certificate)
		if err != nil {
			continue
		}
		recs = append(recs, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
	}
	return recs, a.authenticated, nil
}
