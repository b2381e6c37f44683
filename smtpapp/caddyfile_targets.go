package smtpapp

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// UnmarshalCaddyfile sets up the maildir target from Caddyfile tokens, as
// used inside a route block of the `smtp` global option. Syntax:
//
//	maildir <path>
func (m *Maildir) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume target name
	if !d.NextArg() {
		return d.ArgErr()
	}
	m.Path = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if m.Path == "" {
		return d.Err("maildir: empty path")
	}
	if d.NextBlock(0) {
		d.Prev() // back to the '{' on the target's line
		return d.Err("maildir takes no block")
	}
	return nil
}

// UnmarshalCaddyfile sets up the relay target from Caddyfile tokens, as
// used in a route or the outbound block of the `smtp` global option.
// Syntax:
//
//	relay <host[:port]>... {
//		tls             none|opportunistic|required|verify
//		ca_file         <pem file>
//		auth            <username> <password>
//		connect_timeout <duration>
//		timeout         <duration>
//	}
//
// The block is optional. Hosts are tried in order; the port defaults to
// 25. Username and password may be placeholders such as
// `{env.RELAY_PASSWORD}`, which are replaced when the config is loaded.
func (r *Relay) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume target name
	r.Hosts = d.RemainingArgs()
	if len(r.Hosts) == 0 {
		return d.Err("relay needs at least one host, e.g. 'relay smarthost.example.com:587'")
	}
	for _, h := range r.Hosts {
		if err := checkRelayHost(h); err != nil {
			return d.Errf("relay host '%s': %w", h, err)
		}
	}
	return targetBlock(d, "relay", map[string]targetOption{
		"tls": {1, 1, func(a []string) (err error) {
			r.TLS, err = tlsLevel(a[0])
			return err
		}},
		"auth": {2, 2, func(a []string) error {
			if a[0] == "" || a[1] == "" {
				return errors.New("empty username or password")
			}
			r.Auth = &RelayAuth{Username: a[0], Password: a[1]}
			return nil
		}},
		"connect_timeout": {1, 1, func(a []string) (err error) {
			r.ConnectTimeout, err = positiveDuration(a[0])
			return err
		}},
		"timeout": {1, 1, func(a []string) (err error) {
			r.Timeout, err = positiveDuration(a[0])
			return err
		}},
		"ca_file": {1, 1, func(a []string) error {
			r.CAFile = a[0]
			return nil
		}},
	})
}

// UnmarshalCaddyfile sets up the mx target from Caddyfile tokens, as used
// in a route or the outbound block of the `smtp` global option. Syntax:
//
//	mx {
//		resolvers       <ip[:port]>...
//		tls             none|opportunistic|required|verify|mta-sts|dane
//		domain_tls      <domain> <level>      # repeatable
//		mta_sts         on|off
//		dane            on|off
//		ca_file         <pem file>
//		connect_timeout <duration>
//		timeout         <duration>
//		max_addresses   <n>
//		port            <port>
//	}
//
// The block is optional: `mx` alone delivers with the defaults.
func (m *MX) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume target name
	if d.NextArg() {
		return d.ArgErr()
	}
	return targetBlock(d, "mx", map[string]targetOption{
		"resolvers": {1, -1, func(a []string) error {
			// Given servers, resolver.New only checks their addresses.
			if _, err := resolver.New(a, 0); err != nil {
				return err
			}
			m.Resolvers = a
			return nil
		}},
		"tls": {1, 1, func(a []string) (err error) {
			m.TLS, err = tlsLevel(a[0])
			return err
		}},
		"connect_timeout": {1, 1, func(a []string) (err error) {
			m.ConnectTimeout, err = positiveDuration(a[0])
			return err
		}},
		"timeout": {1, 1, func(a []string) (err error) {
			m.Timeout, err = positiveDuration(a[0])
			return err
		}},
		"max_addresses": {1, 1, func(a []string) (err error) {
			m.MaxAddresses, err = positiveInt(a[0], 0)
			return err
		}},
		"port": {1, 1, func(a []string) (err error) {
			m.Port, err = positiveInt(a[0], 65535)
			return err
		}},
		"domain_tls": {2, 2, func(a []string) error {
			lvl, err := tlsLevel(a[1])
			if err != nil {
				return err
			}
			domain := strings.ToLower(strings.TrimSuffix(a[0], "."))
			if _, dup := m.DomainTLS[domain]; dup {
				return fmt.Errorf("domain '%s' given twice", domain)
			}
			if m.DomainTLS == nil {
				m.DomainTLS = map[string]string{}
			}
			m.DomainTLS[domain] = lvl
			return nil
		}},
		"mta_sts": {1, 1, func(a []string) (err error) {
			m.MTASTS, err = onOff(a[0])
			return err
		}},
		"dane": {1, 1, func(a []string) (err error) {
			m.DANE, err = onOff(a[0])
			return err
		}},
		"ca_file": {1, 1, func(a []string) error {
			m.CAFile = a[0]
			return nil
		}},
	}, "domain_tls")
}

// onOff parses "on" or "off".
func onOff(v string) (*bool, error) {
	switch v {
	case "on":
		b := true
		return &b, nil
	case "off":
		b := false
		return &b, nil
	}
	return nil, fmt.Errorf("want on or off, got '%s'", v)
}

// UnmarshalCaddyfile sets up the accounts authentication provider from
// Caddyfile tokens, as used in a server block of the `smtp` global option.
// Syntax:
//
//	authentication [accounts] {
//		account <username> <password-hash> [<sender>...]
//	}
//
// The first token (`authentication`, or the provider name `accounts`) is
// not checked. account is repeatable, with distinct usernames, and the
// block needs at least one. The password is a hash from `caddy
// hash-password` (bcrypt, or argon2id with `--algorithm argon2id`) or a
// placeholder such as `{env.ALICE_HASH}` that holds one. Senders are
// addresses, `@domain` or `*` (see Account.Senders).
func (a *Accounts) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume "authentication" or the provider name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if opt != "account" {
			return d.Errf("unrecognized authentication option '%s' (want 'account')", opt)
		}
		args := d.RemainingArgs()
		if len(args) < 2 {
			return d.ArgErr()
		}
		if d.NextBlock(d.Nesting()) {
			d.Prev() // back to the '{' on the option's line
			return d.Err("authentication option 'account' takes no block")
		}
		acct := Account{Username: args[0], Password: args[1]}
		if len(args) > 2 {
			acct.Senders = args[2:]
		}
		if err := checkAccount(acct); err != nil {
			return d.Errf("account '%s': %w", acct.Username, err)
		}
		if seen[acct.Username] {
			return d.Errf("duplicate account '%s'", acct.Username)
		}
		seen[acct.Username] = true
		a.Accounts = append(a.Accounts, acct)
	}
	if len(a.Accounts) == 0 {
		d.Reset()
		d.Next()
		return d.Err("authentication has no accounts; give them in its block, e.g. 'account alice <password-hash>'")
	}
	return nil
}

// checkAccount checks an account given in a Caddyfile. A password with a
// placeholder is checked when the config is loaded instead.
func checkAccount(acct Account) error {
	if acct.Username == "" {
		return errors.New("empty username")
	}
	if acct.Password == "" {
		return errors.New("empty password hash")
	}
	if !strings.Contains(acct.Password, "{") {
		if _, err := comparerFor(acct.Password); err != nil {
			return err
		}
	}
	for _, s := range acct.Senders {
		if s != "*" && (!strings.Contains(s, "@") || strings.HasSuffix(s, "@")) {
			return fmt.Errorf("sender '%s': want an address, '@domain' or '*'", s)
		}
	}
	return nil
}

// targetOption describes one option in a target's block: how many
// arguments it takes (maxArgs -1: no limit) and how to apply them.
type targetOption struct {
	minArgs, maxArgs int
	set              func(args []string) error
}

// targetBlock parses the optional block after a target's arguments. Every
// option must be known, given at most once (unless listed as repeatable), with the right number of
// arguments and without a block of its own. An error from an option's set
// function is reported with the option's name and position.
func targetBlock(d *caddyfile.Dispenser, target string, opts map[string]targetOption, repeatable ...string) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		opt, ok := opts[name]
		if !ok {
			return d.Errf("unrecognized %s option '%s'", target, name)
		}
		if seen[name] && !slices.Contains(repeatable, name) {
			return d.Errf("duplicate %s option '%s'", target, name)
		}
		seen[name] = true
		a := d.RemainingArgs()
		if len(a) < opt.minArgs || opt.maxArgs >= 0 && len(a) > opt.maxArgs {
			return d.ArgErr()
		}
		if d.NextBlock(d.Nesting()) {
			d.Prev() // back to the '{' on the option's line
			return d.Errf("%s option '%s' takes no block", target, name)
		}
		if err := opt.set(a); err != nil {
			return d.Errf("%s: %w", name, err)
		}
	}
	return nil
}

// tlsLevel checks a STARTTLS level.
func tlsLevel(v string) (string, error) {
	if v == "" {
		return "", errors.New("empty value")
	}
	return v, tlsupgrade.Level(v).Validate()
}

// positiveDuration parses a Caddy duration greater than zero.
func positiveDuration(v string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("invalid duration '%s': %w", v, err)
	}
	if dur <= 0 {
		return 0, fmt.Errorf("duration must be greater than zero, got '%s'", v)
	}
	return caddy.Duration(dur), nil
}

// positiveInt parses an integer greater than zero and, unless highest is
// 0, at most highest.
func positiveInt(v string, highest int) (int, error) {
	n, err := strconv.Atoi(v)
	switch {
	case highest > 0 && (err != nil || n < 1 || n > highest):
		return 0, fmt.Errorf("want an integer from 1 to %d, got '%s'", highest, v)
	case err != nil || n < 1:
		return 0, fmt.Errorf("want a positive integer, got '%s'", v)
	}
	return n, nil
}

// checkRelayHost checks a relay host given as `host`, `host:port`, an IP
// address or `[ip]:port`: the forms Relay.Provision understands.
func checkRelayHost(h string) error {
	_, err := parseRelayHost(h)
	return err
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Maildir)(nil)
	_ caddyfile.Unmarshaler = (*Relay)(nil)
	_ caddyfile.Unmarshaler = (*MX)(nil)
	_ caddyfile.Unmarshaler = (*Accounts)(nil)
)
