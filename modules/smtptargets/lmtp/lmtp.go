// Package lmtp is the `smtp.targets.lmtp` delivery target: final delivery
// to a mail store (such as Dovecot) over LMTP (RFC 2033), on a unix socket
// or TCP, with one reply per recipient after the data.
package lmtp

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

func init() {
	caddy.RegisterModule(LMTP{})
}

// unixPrefix starts a unix socket address, as in Caddy's network
// addresses: `unix//run/dovecot/lmtp` is the socket /run/dovecot/lmtp.
const unixPrefix = "unix/"

// LMTP is a delivery target that hands mail to a local mail store over
// LMTP, the protocol Dovecot, Cyrus and others take final delivery with.
// Each recipient gets the store's own reply after the data: one refused
// (unknown user, over quota) bounces or waits on its own, the others are
// delivered. Several queued messages share one connection. No header
// fields are added: the store writes its own Return-Path and Delivered-To.
type LMTP struct {
	// Address is where the LMTP server listens: `unix/<path>` for a unix
	// socket (`unix//run/dovecot/lmtp`) or `host:port` for TCP
	// (`127.0.0.1:24`). Required.
	Address string `json:"address,omitempty"`

	// TLS is the STARTTLS policy on TCP (a unix socket never uses TLS):
	//
	// | level           | meaning                                                         |
	// |-----------------|-----------------------------------------------------------------|
	// | `opportunistic` | STARTTLS when offered, else plaintext (the default)             |
	// | `required`      | TLS or no delivery (the message waits and is retried)           |
	// | `verify`        | TLS with a certificate valid for the host (see ca_file)         |
	// | `none`          | never STARTTLS                                                  |
	//
	// required and verify are refused for a unix socket.
	TLS string `json:"tls,omitempty"`

	// CAFile is a PEM bundle of extra roots to trust at the verify level,
	// e.g. a private CA of the mail store. Default: the system roots only.
	CAFile string `json:"ca_file,omitempty"`

	// ConnectTimeout limits connecting to the server. Default: 30s.
	ConnectTimeout caddy.Duration `json:"connect_timeout,omitempty"`

	// Timeout limits the wait for each reply of the server: the greeting,
	// every command, and all the replies after the data. Default: 5m for
	// a reply to a command, 12m for the replies after the data.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	network   string // "unix" or "tcp"
	addr      string // socket path or host:port
	host      string // host name or IP address on TCP, for TLS and logs
	roots     *x509.CertPool
	localName string
	metrics   smtpapp.DeliveryMetrics
}

// CaddyModule returns the Caddy module information.
func (LMTP) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.targets.lmtp",
		New: func() caddy.Module { return new(LMTP) },
	}
}

// Provision checks and prepares the configuration.
func (l *LMTP) Provision(caddy.Context) error {
	var err error
	if l.network, l.addr, l.host, err = parseAddress(l.Address); err != nil {
		return fmt.Errorf("lmtp: address %q: %w", l.Address, err)
	}
	if err := checkTLS(l.network, l.TLS); err != nil {
		return fmt.Errorf("lmtp: %w", err)
	}
	if l.roots, err = tlsupgrade.LoadRoots(l.CAFile); err != nil {
		return fmt.Errorf("lmtp: ca_file: %w", err)
	}
	if l.ConnectTimeout < 0 || l.Timeout < 0 {
		return errors.New("lmtp: timeouts must not be negative")
	}
	if l.ConnectTimeout == 0 {
		l.ConnectTimeout = caddy.Duration(30 * time.Second)
	}
	return nil
}

// parseAddress reads `unix/<path>` or `host:port`.
func parseAddress(a string) (network, addr, host string, err error) {
	if path, ok := strings.CutPrefix(a, unixPrefix); ok {
		if path == "" {
			return "", "", "", errors.New("empty socket path")
		}
		return "unix", path, "", nil
	}
	if a == "" {
		return "", "", "", errors.New("an address is required, e.g. unix//run/dovecot/lmtp or 127.0.0.1:24")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", "", "", errors.New("want unix/<path> or host:port")
	}
	if host == "" {
		return "", "", "", errors.New("empty host name")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", "", fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return "tcp", a, host, nil
}

// checkTLS checks a TLS level for the network: the levels of a relay, and
// none that asks for TLS on a unix socket.
func checkTLS(network, level string) error {
	l := tlsupgrade.Level(level)
	if err := l.Validate(); err != nil {
		return err
	}
	switch l {
	case tlsupgrade.LevelDANE, tlsupgrade.LevelMTASTS:
		return fmt.Errorf("tls %s applies to MX delivery; use verify", level)
	case tlsupgrade.LevelRequired, tlsupgrade.LevelVerify:
		if network == "unix" {
			return fmt.Errorf("tls %s: a unix socket never uses TLS", level)
		}
	}
	return nil
}

// ProvisionTarget implements smtpapp.TargetProvisioner.
func (l *LMTP) ProvisionTarget(env smtpapp.TargetEnv) error {
	l.localName, l.metrics = env.Hostname, env.Metrics
	return nil
}

// Destination implements queue.Target: every recipient goes to the same
// server.
func (l *LMTP) Destination(*queue.Message, string) string { return "" }

// Open implements queue.Target: it connects and says LHLO (after
// STARTTLS, when the policy and the server agree).
func (l *LMTP) Open(ctx context.Context, _ string) (queue.Session, error) {
	c, err := l.dial(ctx)
	if err != nil {
		return nil, err
	}
	l.metrics.CountFallback(c.result)
	return &session{conn: c, metrics: l.metrics, remote: l.remoteName()}, nil
}

// remoteName names the server in logs and DSNs.
func (l *LMTP) remoteName() string {
	if l.network == "unix" {
		return "localhost"
	}
	return l.host
}

// Interface guards
var (
	_ caddy.Provisioner         = (*LMTP)(nil)
	_ queue.Target              = (*LMTP)(nil)
	_ smtpapp.TargetProvisioner = (*LMTP)(nil)
)
