package smtpapp

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

// Authenticator checks SMTP AUTH credentials. Modules in the
// `smtp.authentication.providers` namespace implement it, so that an LDAP or HTTP
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
	if s.hasFrom {
		return nil, s.reject(errAuthInMail, zap.String("from", s.from)) // RFC 4954 section 4
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
	ipKey, userKey := "authfail-ip:"+s.srv.limitKey(ip), "authfail-user:"+username
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
	_ smtp.AuthSession = (*session)(nil)
	_ sasl.Server      = (*loginServer)(nil)
)
