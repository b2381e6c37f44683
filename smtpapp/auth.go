package smtpapp

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Accounts{})
}

// Authenticator checks SMTP AUTH credentials. Modules in the
// `smtp.authentication` namespace implement it, so that an LDAP or HTTP
// backed provider can be added next to the built-in account list.
type Authenticator interface {
	// Authenticate returns the identity for valid credentials, nil and no
	// error for invalid ones, and an error only when the check itself
	// failed (the client then gets a temporary failure).
	Authenticate(ctx context.Context, username, password string) (*Identity, error)
}

// Identity is an authenticated user.
type Identity struct {
	// Username is the login name.
	Username string
	// Senders are the envelope senders the user may use (see Account).
	Senders []string
}

// mayUse reports whether the identity may send with the envelope sender
// addr (RFC 5321 reverse-path; "" is the null sender, allowed).
func (id *Identity) mayUse(addr string) bool {
	if addr == "" {
		return true
	}
	addr = strings.ToLower(addr)
	senders := id.Senders
	if len(senders) == 0 {
		if !strings.Contains(id.Username, "@") {
			return true
		}
		senders = []string{id.Username}
	}
	for _, s := range senders {
		s = strings.ToLower(s)
		switch {
		case s == "*", s == addr:
			return true
		case strings.HasPrefix(s, "@") && strings.HasSuffix(addr, s):
			return true
		}
	}
	return false
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
		ID:  "smtp.authentication.accounts",
		New: func() caddy.Module { return new(Accounts) },
	}
}

// Provision checks the accounts and their hashes.
func (a *Accounts) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	a.users = make(map[string]Account, len(a.Accounts))
	for i, acct := range a.Accounts {
		acct.Username = repl.ReplaceKnown(acct.Username, "")
		acct.Password = repl.ReplaceKnown(acct.Password, "")
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
func (a *Accounts) Authenticate(ctx context.Context, username, password string) (*Identity, error) {
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
	return &Identity{Username: acct.Username, Senders: acct.Senders}, nil
}

// SMTP replies of authentication.
var (
	errAuthThrottled = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentication attempts, try again later"}
	errAuthTempFail  = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	errAuthzMismatch = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authorization identity must be empty or equal the username"}
)

// authFailureWindow is how long failed attempts are remembered.
const authFailureWindow = 10 * time.Minute

// AuthMechanisms implements smtp.AuthSession. go-smtp offers AUTH only
// after TLS; servers without an authenticator offer none.
func (s *session) AuthMechanisms() []string {
	if s.srv.auth == nil {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.srv.auth == nil {
		return nil, smtp.ErrAuthUnsupported
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return errAuthzMismatch
			}
			return s.login(username, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: s.login}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// login checks credentials, with failures throttled per client address and
// per username, and slowed down progressively. Passwords are never logged.
func (s *session) login(username, password string) error {
	ip := s.remoteIP()
	lim := s.srv.app.limits
	ipKey, userKey := "authfail-ip:"+ip, "authfail-user:"+username
	if lim.count(ipKey, authFailureWindow) >= s.srv.maxAuthFailures() ||
		lim.count(userKey, authFailureWindow) >= 2*s.srv.maxAuthFailures() {
		s.logger.Warn("authentication refused: too many failures", zap.String("username", username))
		s.srv.app.metrics.authFailures.WithLabelValues(s.srv.name).Inc()
		return s.refuse(errAuthThrottled)
	}
	id, err := s.srv.auth.Authenticate(s.srv.app.ctx, username, password)
	if err != nil {
		s.logger.Error("authentication backend failed", zap.String("username", username), zap.Error(err))
		return errAuthTempFail
	}
	if id == nil {
		s.srv.app.metrics.authFailures.WithLabelValues(s.srv.name).Inc()
		fails := lim.add(ipKey, authFailureWindow)
		lim.add(userKey, authFailureWindow)
		s.logger.Warn("authentication failed", zap.String("username", username), zap.Int("failures_from_ip", fails))
		// Each failure from this address answers a little later.
		delay := min(time.Duration(fails)*500*time.Millisecond, 5*time.Second)
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.srv.app.ctx.Done():
		}
		s.cs.badCommand()
		return smtp.ErrAuthFailed
	}
	s.identity = id
	s.cs.note(func(cs *connState) { cs.authUser = id.Username })
	s.logger.Info("authenticated", zap.String("username", id.Username))
	return nil
}

// loginServer is the server side of the LOGIN mechanism (the
// draft-murchison-sasl-login one that Outlook and many devices use), which
// go-sasl does not provide.
type loginServer struct {
	check    func(username, password string) error
	step     int
	username string
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		if response == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.username = string(response) // initial response: the username
		l.step = 2
		return []byte("Password:"), false, nil
	case 1:
		l.username = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check(l.username, string(response))
	}
	return nil, false, errors.New("unexpected LOGIN response")
}

// Interface guards
var (
	_ caddy.Provisioner = (*Accounts)(nil)
	_ Authenticator     = (*Accounts)(nil)
	_ smtp.AuthSession  = (*session)(nil)
	_ sasl.Server       = (*loginServer)(nil)
)
