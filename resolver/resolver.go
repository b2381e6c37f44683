// Package resolver is the DNS stub resolver of mail delivery: MX lookup with
// the rules of RFC 5321 section 5.1 and RFC 7505 (null MX), address lookup,
// TXT for MTA-STS and TLSA with the AD bit for DANE.
//
// It sends every query to recursive servers (from the configuration or
// /etc/resolv.conf), over UDP with EDNS0 and a 1232 byte buffer, and over TCP
// when an answer comes back truncated. The servers are asked in order until
// one gives a usable answer (NOERROR or NXDOMAIN); SERVFAIL, REFUSED and
// network errors move on to the next. The package does no DNSSEC validation
// itself: it asks with the AD bit (and DO where signatures matter) and reports
// whether the validating resolver set AD in its answer, which is only worth
// trusting when the path to that resolver is trusted (loopback).
//
// Names are given in any case, with or without the trailing dot, in U-label
// or A-label form; they are reported lowercased, in A-label form, without the
// trailing dot. Every error is an *Error that says whether it is temporary.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout is the timeout of one exchange with one server when
// Resolver.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// resolvConf is where the servers come from when none are configured.
const resolvConf = "/etc/resolv.conf"

// ednsBufferSize is the EDNS0 UDP payload size we advertise (DNS flag day
// 2020): large enough for most answers, small enough to avoid fragmentation.
const ednsBufferSize = 1232

// Resolver sends queries to recursive DNS servers. Its methods are safe for
// concurrent use; do not change its fields while they run.
type Resolver struct {
	// Servers are the recursive servers to ask, as "ip:port", in order of
	// preference. When empty, the nameserver lines of /etc/resolv.conf are
	// read at each lookup.
	Servers []string

	// Timeout bounds one exchange with one server (over UDP, and again over
	// TCP after a truncated answer). The context bounds the whole lookup.
	// Default: DefaultTimeout.
	Timeout time.Duration
}

// New returns a Resolver that asks servers, each an IP address with an
// optional port ("192.0.2.53", "[2001:db8::53]:5353"; the port defaults to
// 53). With no servers, it reads /etc/resolv.conf now, so that a missing or
// empty file is reported here and not at the first delivery. A timeout of
// zero means DefaultTimeout.
func New(servers []string, timeout time.Duration) (*Resolver, error) {
	if timeout < 0 {
		return nil, fmt.Errorf("negative DNS timeout %s", timeout)
	}
	r := &Resolver{Timeout: timeout}
	if len(servers) == 0 {
		s, err := serversFromFile(resolvConf)
		if err != nil {
			return nil, err
		}
		r.Servers = s
		return r, nil
	}
	for _, s := range servers {
		addr, err := serverAddr(s)
		if err != nil {
			return nil, err
		}
		r.Servers = append(r.Servers, addr)
	}
	return r, nil
}

// serverAddr checks a configured server and adds the default port.
func serverAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: a bare IPv4 or IPv6 address.
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "53"
	}
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("dns server %q: not an IP address with an optional port", s)
	}
	if p, err := net.LookupPort("udp", port); err != nil || p == 0 {
		return "", fmt.Errorf("dns server %q: bad port %q", s, port)
	}
	return net.JoinHostPort(host, port), nil
}

// serversFromFile reads the nameserver lines of a resolv.conf file.
func serversFromFile(path string) ([]string, error) {
	conf, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading DNS servers: %w", err)
	}
	if len(conf.Servers) == 0 {
		return nil, fmt.Errorf("reading DNS servers: no nameserver in %s", path)
	}
	servers := make([]string, len(conf.Servers))
	for i, s := range conf.Servers {
		servers[i] = net.JoinHostPort(s, conf.Port)
	}
	return servers, nil
}

func (r *Resolver) servers() ([]string, error) {
	if len(r.Servers) > 0 {
		return r.Servers, nil
	}
	return serversFromFile(resolvConf)
}

func (r *Resolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

// exchange asks the servers in order for (qname, qtype) and returns the first
// answer with NOERROR or NXDOMAIN, and the server that gave it. The query has
// the AD bit set (RFC 6840 section 5.7) and, with dnssecOK, the DO bit. When
// no server answers usefully, the error is a temporary *Error about the last
// server tried.
func (r *Resolver) exchange(ctx context.Context, qname string, qtype uint16, dnssecOK bool) (*dns.Msg, string, error) {
	fail := &Error{Name: presentation(qname), Type: typeName(qtype), Rcode: -1, Temporary: true}
	servers, err := r.servers()
	if err != nil {
		fail.Err = err
		return nil, "", fail
	}
	q := new(dns.Msg)
	q.SetQuestion(qname, qtype)
	q.AuthenticatedData = true
	q.SetEdns0(ednsBufferSize, dnssecOK)

	for _, server := range servers {
		if err := contextErr(ctx); err != nil {
			fail.Err = err
			return nil, "", fail
		}
		resp, err := r.exchangeWith(ctx, q, server)
		fail.Server = server
		switch {
		case err != nil:
			fail.Err, fail.Rcode = err, -1
			if err := contextErr(ctx); err != nil {
				fail.Err = err
				return nil, "", fail
			}
		case resp.Rcode == dns.RcodeSuccess || resp.Rcode == dns.RcodeNameError:
			return resp, server, nil
		default:
			fail.Err, fail.Rcode = rcodeError(resp.Rcode), resp.Rcode
		}
	}
	return nil, "", fail
}

// exchangeWith asks one server over UDP, and again over TCP when the answer is
// truncated.
func (r *Resolver) exchangeWith(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	resp, err := r.roundTrip(ctx, "udp", q, server)
	if err == nil && resp.Truncated {
		resp, err = r.roundTrip(ctx, "tcp", q, server)
	}
	return resp, err
}

// roundTrip sends q to server over network and reads the answer. The
// connection is closed as soon as ctx ends: miekg/dns only honours a
// context's deadline, not its cancellation.
func (r *Resolver) roundTrip(ctx context.Context, network string, q *dns.Msg, server string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: r.timeout(), UDPSize: ednsBufferSize}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	resp, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil {
		return nil, err
	}
	usable := resp.Rcode == dns.RcodeSuccess || resp.Rcode == dns.RcodeNameError
	if usable && (len(resp.Question) != 1 || resp.Question[0].Qtype != q.Question[0].Qtype ||
		!strings.EqualFold(resp.Question[0].Name, q.Question[0].Name)) {
		return nil, errors.New("answer is for another question")
	}
	return resp, nil
}

// contextErr returns the error of ctx, also when its deadline has passed but
// ctx.Err does not say so yet: a read deadline set to the same instant may
// fire first.
func contextErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
		return context.DeadlineExceeded
	}
	return nil
}
