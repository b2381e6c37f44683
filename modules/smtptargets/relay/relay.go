// Package relay is the `smtp.targets.relay` delivery target: fixed SMTP
// hosts (a customer's own server, a smarthost), tried in order.
package relay

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/modules/smtptargets/smtpclient"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

func init() {
	caddy.RegisterModule(Relay{})
}

// Relay is a delivery target that hands mail to fixed SMTP hosts: a
// customer's own mail server behind the gateway, or a smarthost for
// outbound mail. Hosts are tried in order until one answers (failover);
// several queued messages share one connection.
type Relay struct {
	// Hosts are the relay hosts as `host:port` (port 25 when omitted),
	// tried in order.
	Hosts []string `json:"hosts,omitempty"`

	// TLS is the STARTTLS policy towards the hosts:
	//
	// | level           | meaning                                                      |
	// |-----------------|--------------------------------------------------------------|
	// | `opportunistic` | STARTTLS when offered, else plaintext (the default)          |
	// | `required`      | TLS or no delivery (the message waits and is retried)        |
	// | `verify`        | TLS with a certificate valid for the host name (see ca_file) |
	// | `none`          | never STARTTLS                                               |
	TLS string `json:"tls,omitempty"`

	// ImplicitTLS speaks TLS from the first byte, as to a submissions port
	// 465 (RFC 8314), instead of STARTTLS: tls must then be `required` or
	// `verify`; no plaintext is ever sent, and hosts without a port get
	// 465. The Caddyfile's `tls implicit [required|verify]` sets both
	// (verify by default). Default: false.
	ImplicitTLS bool `json:"implicit_tls,omitempty"`

	// CAFile is a PEM bundle of extra roots to trust at the verify level,
	// e.g. a customer's private CA. Default: the system roots only.
	CAFile string `json:"ca_file,omitempty"`

	// TrustPool adds the roots of a Caddy CA pool source (module namespace
	// `tls.ca_pool.source`) to those trusted at the verify level, for
	// example `{"provider": "pki_root", "authority": ["local"]}`: the root of
	// Caddy's own internal CA, when the relay host's certificate comes from
	// it (a second Caddy, or this one). Default: none.
	TrustPool json.RawMessage `json:"trust_pool,omitempty" caddy:"namespace=tls.ca_pool.source inline_key=provider"`

	// Auth logs in to the relay with SMTP AUTH (PLAIN, or LOGIN if the
	// server offers only that). It needs tls verify: credentials are only
	// ever sent over TLS to a host whose certificate is valid for its name
	// (system roots or ca_file), never to whoever answers on the way.
	// Default: no login.
	Auth *RelayAuth `json:"auth,omitempty"`

	// ConnectTimeout limits connecting to one host. Default: 30s.
	ConnectTimeout caddy.Duration `json:"connect_timeout,omitempty"`

	// Timeout limits the wait for each reply of the relay (the greeting,
	// every command). Default: 5m (RFC 5321 4.5.3.2).
	Timeout caddy.Duration `json:"timeout,omitempty"`

	localName string
	metrics   smtpapp.DeliveryMetrics
	roots     *x509.CertPool
	hosts     []relayHost
}

// RelayAuth holds the credentials for a relay. Values may use Caddy
// placeholders such as `{env.RELAY_PASSWORD}`.
type RelayAuth struct {
	// Username is the login name.
	Username string `json:"username,omitempty"`
	// Password is the password.
	Password string `json:"password,omitempty"`
}

type relayHost struct {
	addr string // host:port
	name string // host name for SNI and logs
}

// CaddyModule returns the Caddy module information.
func (Relay) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.targets.relay",
		New: func() caddy.Module { return new(Relay) },
	}
}

// Provision checks and prepares the configuration.
func (r *Relay) Provision(ctx caddy.Context) error {
	if len(r.Hosts) == 0 {
		return errors.New("relay: at least one host is required")
	}
	if err := tlsupgrade.Level(r.TLS).Validate(); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	switch tlsupgrade.Level(r.TLS) {
	case tlsupgrade.LevelDANE, tlsupgrade.LevelMTASTS:
		return fmt.Errorf("relay: tls %s applies to MX delivery; use verify for a relay", r.TLS)
	}
	if l := tlsupgrade.Level(r.TLS); r.ImplicitTLS && l != tlsupgrade.LevelRequired && l != tlsupgrade.LevelVerify {
		return fmt.Errorf("relay: implicit_tls needs tls required or verify (implicit TLS is never plaintext), not %q", r.TLS)
	}
	var err error
	if r.roots, err = tlsupgrade.LoadRoots(r.CAFile); err != nil {
		return fmt.Errorf("relay: ca_file: %w", err)
	}
	if len(r.TrustPool) > 0 {
		if r.roots, err = addTrustPool(ctx, r, r.roots); err != nil {
			return fmt.Errorf("relay: trust_pool: %w", err)
		}
	}
	if r.ConnectTimeout < 0 || r.Timeout < 0 {
		return errors.New("relay: timeouts must not be negative")
	}
	if r.ConnectTimeout == 0 {
		r.ConnectTimeout = caddy.Duration(30 * time.Second)
	}
	r.hosts = r.hosts[:0]
	for _, h := range r.Hosts {
		port := "25"
		if r.ImplicitTLS {
			port = "465"
		}
		rh, err := parseRelayHost(h, port)
		if err != nil {
			return fmt.Errorf("relay: host %q: %w", h, err)
		}
		r.hosts = append(r.hosts, rh)
	}
	if r.Auth != nil {
		repl := caddy.NewReplacer()
		rawUser, rawPass := r.Auth.Username, r.Auth.Password
		r.Auth.Username = repl.ReplaceAll(r.Auth.Username, "")
		r.Auth.Password = repl.ReplaceAll(r.Auth.Password, "")
		if r.Auth.Username == "" {
			return fmt.Errorf("relay: auth needs a username (%q is empty: is what it names set?)", rawUser)
		}
		if r.Auth.Password == "" {
			if rawPass != "" {
				return fmt.Errorf("relay: auth password %s is empty: is it set in Caddy's environment?", rawPass)
			}
			return errors.New("relay: auth needs a password")
		}
	}
	return nil
}

// Validate implements caddy.Validator: credentials go only to a relay
// whose certificate verifies.
func (r *Relay) Validate() error {
	return checkAuthTLS(r.Auth != nil, r.TLS)
}

// checkAuthTLS refuses auth at any tls level but verify: at none the
// password would cross the network in plaintext, and at opportunistic or
// required anyone on the path can present a self-signed certificate and
// read it.
func checkAuthTLS(auth bool, level string) error {
	if !auth || tlsupgrade.Level(level) == tlsupgrade.LevelVerify {
		return nil
	}
	if level == "" {
		level = string(tlsupgrade.LevelOpportunistic) + " (the default)"
	}
	return fmt.Errorf("relay: auth needs tls verify (a certificate valid for the host name, from the system roots or ca_file), but tls is %s", level)
}

// parseRelayHost reads `host`, `host:port` or `[ipv6]:port`; the port
// defaults to 25.
func parseRelayHost(h, defaultPort string) (relayHost, error) {
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		host, port = strings.Trim(h, "[]"), defaultPort
		if strings.Contains(host, ":") && net.ParseIP(host) == nil {
			return relayHost{}, errors.New("want host or host:port")
		}
	}
	if host == "" {
		return relayHost{}, errors.New("empty host name")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return relayHost{}, fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return relayHost{addr: net.JoinHostPort(host, port), name: host}, nil
}

// ProvisionTarget implements smtpapp.TargetProvisioner.
func (r *Relay) ProvisionTarget(env smtpapp.TargetEnv) error {
	r.localName, r.metrics = env.Hostname, env.Metrics
	return nil
}

// Destination implements queue.Target: every recipient goes to the same
// hosts.
func (r *Relay) Destination(*queue.Message, string) string { return "" }

// Open implements queue.Target: the first host that answers gets the
// session.
func (r *Relay) Open(ctx context.Context, _ string) (queue.Session, error) {
	conn, h, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	return smtpclient.New(conn, h.name, h.addr, r.metrics, true), nil
}

// connect dials the relay hosts in order and logs in to the first that
// answers.
func (r *Relay) connect(ctx context.Context) (*tlsupgrade.Conn, relayHost, error) {
	var errs queue.Errors         // for the log
	var fails smtpclient.Failures // for the sender: no names of relay hosts
	for _, h := range r.hosts {
		conn, err := tlsupgrade.Dial(ctx, h.addr, tlsupgrade.Options{
			LocalName: r.localName, ServerName: h.name, Policy: tlsupgrade.Policy{Level: tlsupgrade.Level(r.TLS)},
			RootCAs: r.roots, ConnectTimeout: time.Duration(r.ConnectTimeout), CommandTimeout: time.Duration(r.Timeout),
			ImplicitTLS: r.ImplicitTLS,
		})
		if err != nil {
			errs = append(errs, err)
			fails.Add("", err)
			continue
		}
		if err := r.login(conn, h.name); err != nil {
			conn.Close()
			return nil, h, err
		}
		return conn, h, nil
	}
	return nil, relayHost{}, &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.1",
		Message: "relay host not reachable: " + fails.String(), Err: errs}
}

// addTrustPool loads the CA pool source of r.TrustPool and adds its roots
// to roots (nil: the system roots).
func addTrustPool(ctx caddy.Context, r *Relay, roots *x509.CertPool) (*x509.CertPool, error) {
	var src struct {
		Provider string `json:"provider"`
	}
	_ = json.Unmarshal(r.TrustPool, &src)
	if strings.HasPrefix(src.Provider, "pki_") {
		// The pki sources want the pki app running; load it (with its
		// default CA "local") as Caddy's internal issuer does.
		if _, err := ctx.App("pki"); err != nil {
			return nil, err
		}
	}
	mod, err := ctx.LoadModule(r, "TrustPool")
	if err != nil {
		return nil, err
	}
	certs, ok := mod.(caddytls.CertificateProvider)
	if !ok {
		return nil, fmt.Errorf("%T does not list its certificates, so they cannot be added to the system roots", mod)
	}
	if roots == nil {
		if roots, err = x509.SystemCertPool(); err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
	}
	for _, c := range certs.Certificates() {
		roots.AddCert(c)
	}
	return roots, nil
}

// ProbeRecipient implements smtpapp.RecipientProber: it asks the first
// relay host that answers, as a delivery would (same TLS policy, same
// login), whether it takes rcpt, with the null sender, and sends no
// message.
func (r *Relay) ProbeRecipient(ctx context.Context, rcpt string) error {
	conn, _, err := r.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Client.Mail("", nil); err != nil {
		return probeError(err, "MAIL FROM:<> refused")
	}
	err = conn.Client.Rcpt(rcpt, nil)
	_ = conn.Client.Reset()
	_ = conn.Client.Quit()
	if err != nil {
		return probeError(err, "recipient refused")
	}
	return nil
}

// probeError turns the relay's reply into a delivery error: permanent for
// 5xx, temporary for anything else.
func probeError(err error, what string) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return &queue.DeliveryError{Temporary: se.Code < 500, Code: se.Code,
			Enhanced: fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2]), Message: what, Err: err}
	}
	return &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.4.2", Message: what, Err: err}
}

// login authenticates when credentials are configured, only over TLS
// with a certificate that verifies for host. Validate already insists on
// tls verify; this checks the live connection again, so that no later
// change of the dial policy can hand the password to an impostor.
func (r *Relay) login(conn *tlsupgrade.Conn, host string) error {
	if r.Auth == nil {
		return nil
	}
	cs, ok := conn.TLSConnectionState()
	if !ok || !conn.Result.Verified {
		return &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.7.0",
			Message: "not sending relay credentials over a connection without verified TLS"}
	}
	if err := tlsupgrade.VerifyPeer(cs, host, r.roots); err != nil {
		return &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.7.0",
			Message: "not sending relay credentials: the certificate does not verify", Err: err}
	}
	var mech sasl.Client
	switch {
	case conn.Client.SupportsAuth(sasl.Plain):
		mech = sasl.NewPlainClient("", r.Auth.Username, r.Auth.Password)
	case conn.Client.SupportsAuth(sasl.Login):
		mech = sasl.NewLoginClient(r.Auth.Username, r.Auth.Password)
	default:
		return &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.7.0",
			Message: "the relay offers neither AUTH PLAIN nor AUTH LOGIN"}
	}
	if err := conn.Client.Auth(mech); err != nil {
		// Wrong credentials are a configuration problem: keep the mail
		// and retry, never bounce it.
		return &queue.DeliveryError{Temporary: true, Code: 451, Enhanced: "4.7.0",
			Message: "relay authentication failed", Err: err}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner         = (*Relay)(nil)
	_ caddy.Validator           = (*Relay)(nil)
	_ queue.Target              = (*Relay)(nil)
	_ smtpapp.TargetProvisioner = (*Relay)(nil)
	_ smtpapp.RecipientProber   = (*Relay)(nil)
)
