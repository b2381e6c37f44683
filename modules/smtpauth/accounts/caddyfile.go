package accounts

import (
	"errors"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

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

// Interface guards
var _ caddyfile.Unmarshaler = (*Accounts)(nil)
