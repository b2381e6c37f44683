package smtpapp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

func init() {
	caddy.RegisterModule(MX{})
}

// MX is the delivery target for mail to the world: it looks up the MX hosts
// of each recipient domain (falling back to the domain's own address when
// it has no MX, RFC 5321 5.1) and tries them in preference order. A null MX
// (RFC 7505) or a domain that does not exist bounces; DNS trouble and
// unreachable hosts defer. All recipients of one domain share connections.
type MX struct {
	// Resolvers are the DNS servers to ask (`host:port`, port 53 when
	// omitted). Default: the servers in /etc/resolv.conf.
	Resolvers []string `json:"resolvers,omitempty"`

	// TLS is the STARTTLS policy: `opportunistic` (default), `required` or
	// `none` (see the relay target).
	TLS string `json:"tls,omitempty"`

	// ConnectTimeout limits connecting to one address. Default: 30s.
	ConnectTimeout caddy.Duration `json:"connect_timeout,omitempty"`

	// Timeout limits the wait for each reply of an MX host (the greeting,
	// every command). Default: 5m (RFC 5321 4.5.3.2).
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// MaxAddresses is how many addresses are tried for one destination
	// before it is deferred. Default: 5.
	MaxAddresses int `json:"max_addresses,omitempty"`

	// Port is the port of the MX hosts. Default: 25. Only tests change
	// this.
	Port int `json:"port,omitempty"`

	localName string
	metrics   *metrics
	resolver  *resolver.Resolver
}

// CaddyModule returns the Caddy module information.
func (MX) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.targets.mx",
		New: func() caddy.Module { return new(MX) },
	}
}

// Provision sets up the resolver.
func (m *MX) Provision(caddy.Context) error {
	if err := tlsupgrade.Level(m.TLS).Validate(); err != nil {
		return fmt.Errorf("mx: %w", err)
	}
	if m.ConnectTimeout < 0 || m.Timeout < 0 || m.MaxAddresses < 0 || m.Port < 0 || m.Port > 65535 {
		return errors.New("mx: connect_timeout, timeout, max_addresses and port must be valid non-negative values")
	}
	if m.ConnectTimeout == 0 {
		m.ConnectTimeout = caddy.Duration(30 * time.Second)
	}
	if m.MaxAddresses == 0 {
		m.MaxAddresses = 5
	}
	if m.Port == 0 {
		m.Port = 25
	}
	r, err := resolver.New(m.Resolvers, 0)
	if err != nil {
		return fmt.Errorf("mx: resolvers: %w", err)
	}
	m.resolver = r
	return nil
}

func (m *MX) configure(c targetConfig) { m.localName, m.metrics = c.localName, c.metrics }

// Destination implements queue.Target: the recipient's domain.
func (m *MX) Destination(rcpt string) string { return queue.Domain(rcpt) }

// Open implements queue.Target: connect to the first MX host that answers.
func (m *MX) Open(ctx context.Context, domain string) (queue.Session, error) {
	port := strconv.Itoa(m.Port)
	if lit, ok := strings.CutPrefix(domain, "["); ok {
		ip := net.ParseIP(strings.TrimPrefix(strings.TrimSuffix(lit, "]"), "IPv6:"))
		if ip == nil {
			return nil, &queue.DeliveryError{Code: 550, Enhanced: "5.1.2", Message: "bad address literal " + domain}
		}
		return m.dialHost(ctx, "", []net.IP{ip}, port)
	}
	hosts, _, err := m.resolver.MXHosts(ctx, domain)
	if err != nil {
		return nil, mxLookupError(domain, err)
	}
	// RFC 5321 5.1: if we are one of the MX hosts, only more preferred
	// hosts may be tried; if we are the most preferred, the mail loops.
	for i, h := range hosts {
		if strings.EqualFold(h.Host, m.localName) {
			hosts = hosts[:i]
			for len(hosts) > 0 && hosts[len(hosts)-1].Pref >= h.Pref {
				hosts = hosts[:len(hosts)-1]
			}
			if len(hosts) == 0 {
				return nil, &queue.DeliveryError{Code: 554, Enhanced: "5.4.6",
					Message: "mail for " + domain + " loops back to myself"}
			}
			break
		}
	}
	var errs []string
	tried := 0
	for _, h := range hosts {
		if tried >= m.MaxAddresses {
			break
		}
		ips, err := m.resolver.LookupIP(ctx, h.Host)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if len(ips) > m.MaxAddresses-tried {
			ips = ips[:m.MaxAddresses-tried]
		}
		tried += len(ips)
		sess, err := m.dialHost(ctx, h.Host, ips, port)
		if err == nil {
			return sess, nil
		}
		errs = append(errs, err.Error())
	}
	return nil, &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.1",
		Message: "no MX host of " + domain + " answered", Err: errors.New(strings.Join(errs, "; "))}
}

// dialHost tries the addresses of one host in order.
func (m *MX) dialHost(ctx context.Context, host string, ips []net.IP, port string) (queue.Session, error) {
	var last error
	for _, ip := range ips {
		addr := net.JoinHostPort(ip.String(), port)
		conn, err := dialOutbound(ctx, addr, host, m.localName, tlsupgrade.Level(m.TLS), time.Duration(m.ConnectTimeout), time.Duration(m.Timeout))
		if err != nil {
			last = err
			continue
		}
		name := host
		if name == "" {
			name = ip.String()
		}
		return newSMTPSession(conn, name, addr, m.metrics), nil
	}
	if last == nil {
		last = errors.New("no addresses")
	}
	return nil, last
}

// mxLookupError maps a DNS failure to a delivery error: a null MX or a
// domain without mail hosts bounces, DNS trouble defers.
func mxLookupError(domain string, err error) error {
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		return &queue.DeliveryError{Code: 556, Enhanced: "5.1.10", Message: domain + " does not accept mail (null MX)", Err: err}
	case resolver.IsNotFound(err):
		return &queue.DeliveryError{Code: 550, Enhanced: "5.1.2", Message: "no mail host for " + domain, Err: err}
	}
	return &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.3", Message: "DNS lookup for " + domain + " failed", Err: err}
}

// Interface guards
var (
	_ caddy.Provisioner = (*MX)(nil)
	_ queue.Target      = (*MX)(nil)
)
