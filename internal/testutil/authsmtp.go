package testutil

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// AuthServer is a real go-smtp server on 127.0.0.1 with STARTTLS and AUTH
// PLAIN (offered only after STARTTLS), playing a smarthost that wants a
// login, or an interceptor that would like to read one. It records every
// TLS handshake, every AUTH command and every message.
type AuthServer struct {
	Addr string

	// Handshakes counts TLS ClientHellos; AuthAttempts counts AUTH
	// commands, whatever their outcome.
	Handshakes   atomic.Int32
	AuthAttempts atomic.Int32

	mu       sync.Mutex
	logins   []Login
	messages []AuthMessage
}

// Login is what one AUTH PLAIN command carried.
type Login struct{ Username, Password string }

// AuthMessage is one message the server accepted, with the user who
// logged in on its session ("" without a login).
type AuthMessage struct {
	User string
	From string
	To   []string
	Data []byte
}

// StartAuthServer serves STARTTLS with cert and accepts AUTH PLAIN when
// the username and password are user and pass; messages are accepted only
// after a successful login. It stops when the test ends.
func StartAuthServer(t testing.TB, cert tls.Certificate, user, pass string) *AuthServer {
	t.Helper()
	s := &AuthServer{}
	srv := smtp.NewServer(authBackend{s: s, user: user, pass: pass})
	srv.Domain = "auth.test"
	srv.TLSConfig = &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s.Handshakes.Add(1)
			return nil, nil
		},
	}
	srv.ErrorLog = quietLog{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

// Logins returns the AUTH PLAIN payloads received so far.
func (s *AuthServer) Logins() []Login {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Login(nil), s.logins...)
}

// Messages returns the messages accepted so far.
func (s *AuthServer) Messages() []AuthMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]AuthMessage(nil), s.messages...)
}

type quietLog struct{}

func (quietLog) Printf(string, ...any) {}
func (quietLog) Println(...any)        {}

type authBackend struct {
	s          *AuthServer
	user, pass string
}

func (b authBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &authSession{b: b}, nil
}

type authSession struct {
	b    authBackend
	user string // set after a successful login
	msg  AuthMessage
}

func (a *authSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (a *authSession) Auth(mech string) (sasl.Server, error) {
	a.b.s.AuthAttempts.Add(1)
	return sasl.NewPlainServer(func(_, username, password string) error {
		a.b.s.mu.Lock()
		a.b.s.logins = append(a.b.s.logins, Login{username, password})
		a.b.s.mu.Unlock()
		if username != a.b.user || password != a.b.pass {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		a.user = username
		return nil
	}), nil
}

func (a *authSession) Mail(from string, _ *smtp.MailOptions) error {
	if a.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	a.msg = AuthMessage{User: a.user, From: from}
	return nil
}

func (a *authSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	a.msg.To = append(a.msg.To, to)
	return nil
}

func (a *authSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	a.msg.Data = data
	a.b.s.mu.Lock()
	a.b.s.messages = append(a.b.s.messages, a.msg)
	a.b.s.mu.Unlock()
	return nil
}

func (a *authSession) Reset()        { a.msg = AuthMessage{} }
func (a *authSession) Logout() error { return nil }
