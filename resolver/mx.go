package resolver

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"slices"

	"github.com/miekg/dns"
)

// MXHosts returns the hosts to try, in order, for mail to domain (RFC 5321
// section 5.1):
//
//   - the MX records sorted by preference, those of equal preference in
//     random order, each host once;
//   - no MX records (NODATA): the domain itself, or the end of its CNAME
//     chain, as an implicit MX with preference 0, if it has an A or AAAA
//     record; otherwise a permanent NotFound error wrapping ErrNoMailHost;
//   - a null MX, a target of "." (RFC 7505), even among other MX records: a
//     permanent error wrapping ErrNullMX;
//   - NXDOMAIN: a permanent NotFound error;
//   - SERVFAIL, REFUSED, timeouts and network errors: a temporary error.
//
// authenticated is the AD bit of the MX answer (for an implicit MX, of the
// NODATA answer): whether a validating resolver vouches for this list, as
// DANE and REQUIRETLS need. It is also reported with ErrNullMX and
// ErrNoMailHost. Hosts are returned as named, even when they are CNAMEs;
// LookupIP follows the CNAME. Dropping the hosts that are this server itself
// (and those of higher preference) is left to the caller.
func (r *Resolver) MXHosts(ctx context.Context, domain string) (hosts []MX, authenticated bool, err error) {
	a, err := r.lookup(ctx, domain, dns.TypeMX, true)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.NotFound && e.Rcode == dns.RcodeSuccess {
			return r.implicitMX(ctx, a)
		}
		return nil, false, err
	}
	mxs := mxRecords(a.rrs)
	for _, mx := range mxs {
		if mx.Host == "." {
			return nil, a.authenticated, a.permanentError(dns.TypeMX, dns.RcodeSuccess, false, ErrNullMX)
		}
	}
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(x, y MX) int { return cmp.Compare(x.Pref, y.Pref) })
	seen := make(map[string]bool, len(mxs))
	for _, mx := range mxs {
		if !seen[mx.Host] {
			seen[mx.Host] = true
			hosts = append(hosts, mx)
		}
	}
	return hosts, a.authenticated, nil
}

// implicitMX handles a domain without MX records: its own name (the end of
// its CNAME chain) is the mail host if it has an address.
func (r *Resolver) implicitMX(ctx context.Context, a answer) ([]MX, bool, error) {
	host := presentation(a.canonical)
	if _, err := r.LookupIP(ctx, host); err != nil {
		if IsNotFound(err) {
			return nil, a.authenticated, a.permanentError(dns.TypeMX, dns.RcodeSuccess, true, ErrNoMailHost)
		}
		return nil, false, err
	}
	return []MX{{Host: host, Pref: 0, Implicit: true}}, a.authenticated, nil
}
