// Package accounts is the `smtp.authentication.providers.accounts` SMTP
// AUTH provider: a list of users with password hashes made by
// `caddy hash-password`.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
)

func init() {
	caddy.RegisterModule(Accounts{})
}

// Accounts is the built-in authenticator: a list of accounts whose
// passwords are hashes made with `caddy hash-password` (bcrypt, or argon2id
// with `--algorithm argon2id`). The hash kind is recognised from the hash
// itself and checked with Caddy's own hash modules. Unknown users cost as
// much time as known ones.
type Accounts struct {
	// Accounts are the users who may log in.
	Accounts []Account `json:"accounts,omitempty"`

	users map[string]Account
	fake  []byte
}

// Account is one user of the Accounts authenticator.
type Account struct {
	// Username is the login name, compared exactly.
	Username string `json:"username,omitempty"`
	// Password is the password hash from `caddy hash-password`; it may be a
	// placeholder such as `{env.ALICE_HASH}`.
	Password string `json:"password,omitempty"`
	// Senders are the envelope senders this user may use: full addresses,
	// `@domain` for any address of a domain, or `*` for any. Default: the
	// username if it is an address, else any sender.
	Senders []string `json:"senders,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Accounts) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.authentication.providers.accounts",
		New: func() caddy.Module { return new(Accounts) },
	}
}

// Provision checks the accounts and their hashes.
func (a *Accounts) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	a.users = make(map[string]Account, len(a.Accounts))
	for i, acct := range a.Accounts {
		rawPassword := acct.Password
		acct.Username = repl.ReplaceKnown(acct.Username, "")
		acct.Password = repl.ReplaceKnown(acct.Password, "")
		if acct.Password == "" && rawPassword != "" {
			return fmt.Errorf("account %q: password hash %s is empty: is it set in Caddy's environment?", acct.Username, rawPassword)
		}
		for j, s := range acct.Senders {
			acct.Senders[j] = repl.ReplaceKnown(s, "")
		}
		if acct.Username == "" {
			return fmt.Errorf("account %d: empty username", i)
		}
		if _, dup := a.users[acct.Username]; dup {
			return fmt.Errorf("account %d: duplicate username %q", i, acct.Username)
		}
		if _, err := comparerFor(acct.Password); err != nil {
			return fmt.Errorf("account %q: %w", acct.Username, err)
		}
		a.users[acct.Username] = acct
	}
	a.fake = caddyauth.BcryptHash{}.FakeHash()
	return nil
}

// comparerFor picks Caddy's hash module for a hash by its prefix.
func comparerFor(hash string) (caddyauth.Comparer, error) {
	switch {
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		return caddyauth.BcryptHash{}, nil
	case strings.HasPrefix(hash, "$argon2id$"):
		return caddyauth.Argon2idHash{}, nil
	}
	return nil, errors.New("password is not a bcrypt or argon2id hash (make one with `caddy hash-password`)")
}

// hashSlots bounds concurrent password hashing, which is deliberately
// expensive: a flood of AUTH attempts must not take every CPU.
var hashSlots = make(chan struct{}, max(1, runtime.NumCPU()))

// Authenticate implements Authenticator.
func (a *Accounts) Authenticate(ctx context.Context, username, password string) (*smtpapp.Identity, error) {
	select {
	case hashSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-hashSlots }()
	acct, known := a.users[username]
	if !known {
		// Spend the same time as for a real account.
		_, _ = caddyauth.BcryptHash{}.Compare(a.fake, []byte(password))
		return nil, nil
	}
	cmp, err := comparerFor(acct.Password)
	if err != nil {
		return nil, err
	}
	ok, err := cmp.Compare([]byte(acct.Password), []byte(password))
	if err != nil || !ok {
		return nil, err
	}
	return &smtpapp.Identity{Username: acct.Username, Senders: acct.Senders}, nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Accounts)(nil)
	_ smtpapp.Authenticator = (*Accounts)(nil)
)
