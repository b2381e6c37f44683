package smtpclient

import (
	"context"
	"fmt"
	"net"
)

// Interleave orders a host's addresses for connection attempts as RFC
// 8305 section 4 does: IPv6 first, then alternating between the families,
// each family in its own order, so that a budget of attempts is not spent
// on one family that does not work.
func Interleave(ips []net.IP) []net.IP {
	var v6, v4 []net.IP
	for _, ip := range ips {
		if ip.To4() != nil {
			v4 = append(v4, ip)
		} else {
			v6 = append(v6, ip)
		}
	}
	out := make([]net.IP, 0, len(ips))
	for i := 0; i < len(v6) || i < len(v4); i++ {
		if i < len(v6) {
			out = append(out, v6[i])
		}
		if i < len(v4) {
			out = append(out, v4[i])
		}
	}
	return out
}

// Sources are the local addresses outbound connections leave from: at
// most one IPv4 and one IPv6 address; a connection to an address of a
// family without one leaves from the system's choice.
type Sources struct{ v4, v6 net.IP }

// ParseSources reads source addresses from the config.
func ParseSources(addrs []string) (Sources, error) {
	var s Sources
	for _, a := range addrs {
		ip := net.ParseIP(a)
		switch {
		case ip == nil:
			return s, fmt.Errorf("source address %q is not an IP address", a)
		case ip.To4() != nil && s.v4 != nil, ip.To4() == nil && s.v6 != nil:
			return s, fmt.Errorf("source address %q: at most one IPv4 and one IPv6 address", a)
		case ip.To4() != nil:
			s.v4 = ip
		default:
			s.v6 = ip
		}
	}
	return s, nil
}

// Empty reports whether no source address is set.
func (s Sources) Empty() bool { return s.v4 == nil && s.v6 == nil }

// DialContext dials from the source address of the destination's family.
func (s Sources) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip != nil {
		src := s.v6
		if ip.To4() != nil {
			src = s.v4
		}
		if src != nil {
			d.LocalAddr = &net.TCPAddr{IP: src}
		}
	}
	return d.DialContext(ctx, network, addr)
}
