package tlsupgrade

import (
	"container/list"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"sync"
	"time"
)

// DefaultServerSessions and DefaultServerSessionLifetime are what
// NewServerSessions uses for a max or lifetime of 0.
const (
	DefaultServerSessions        = 10000
	DefaultServerSessionLifetime = time.Hour
)

// ServerSessions lets the clients of a TLS server resume their sessions
// from this server's memory: what a client gets in the NewSessionTicket
// message is a random 32-byte identifier, not the state sealed with a key.
// A session is resumed at most once (a resumed connection gets a new
// identifier), lasts at most its lifetime, and is only resumed under the
// connection policy (the tls.Config that GetConfigForClient chose) it was
// made with and while that policy would still send the certificate it was
// made with. Policies that ask for client certificates send no tickets.
// Sessions are held by identifier, oldest first in the list (all have the
// same lifetime).
type ServerSessions struct {
	max      int
	lifetime time.Duration
	now      func() time.Time

	mu     sync.Mutex
	byID   map[string]*list.Element
	oldest list.List // of *cachedSession
}

// cachedSession is one session: its state as crypto/tls serialized it, and
// the connection policy and certificate it was made with.
type cachedSession struct {
	id      string
	state   []byte
	policy  *tls.Config
	cert    [sha256.Size]byte // SHA-256 of the leaf certificate
	expires time.Time
}

// NewServerSessions returns an empty cache of at most max sessions (the
// oldest go first) that can each be resumed for lifetime after the
// handshake that made them; 0 means the default.
func NewServerSessions(max int, lifetime time.Duration) *ServerSessions {
	if max <= 0 {
		max = DefaultServerSessions
	}
	if lifetime <= 0 {
		lifetime = DefaultServerSessionLifetime
	}
	return &ServerSessions{max: max, lifetime: lifetime, now: time.Now, byID: make(map[string]*list.Element)}
}

// put stores a session and returns its new identifier. It drops the
// expired sessions, and the oldest when the cache is full.
func (sc *ServerSessions) put(state []byte, policy *tls.Config, cert [sha256.Size]byte) []byte {
	id := make([]byte, 32)
	rand.Read(id) // never fails (crypto/rand)
	now := sc.now()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for sc.oldest.Len() > 0 {
		front := sc.oldest.Front()
		if sc.oldest.Len() < sc.max && front.Value.(*cachedSession).expires.After(now) {
			break
		}
		sc.remove(front)
	}
	cs := &cachedSession{id: string(id), state: state, policy: policy, cert: cert, expires: now.Add(sc.lifetime)}
	sc.byID[cs.id] = sc.oldest.PushBack(cs)
	return id
}

// take removes the session with the identifier and returns it, or nil when
// there is none or it has expired: a session is resumed at most once.
func (sc *ServerSessions) take(id []byte) *cachedSession {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	el, ok := sc.byID[string(id)]
	if !ok {
		return nil
	}
	sc.remove(el)
	cs := el.Value.(*cachedSession)
	if !sc.now().Before(cs.expires) {
		return nil
	}
	return cs
}

// remove drops a session, with sc.mu held.
func (sc *ServerSessions) remove(el *list.Element) {
	delete(sc.byID, el.Value.(*cachedSession).id)
	sc.oldest.Remove(el)
}

// len returns the number of sessions held.
func (sc *ServerSessions) len() int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.oldest.Len()
}

// Resume makes the connections of cfg keep and resume TLS sessions in sc:
// the connection policy's config that cfg.GetConfigForClient (which must
// be set, as caddytls sets it) chooses for each ClientHello is copied with
// tickets on and bound to that handshake (see bind).
func (sc *ServerSessions) Resume(cfg *tls.Config) {
	next := cfg.GetConfigForClient // the connection policies' choice
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := next(hello)
		if err != nil || c == nil {
			return c, err
		}
		return sc.bind(c, hello), nil
	}
}

// leafSum returns the SHA-256 of the leaf of cert, and false when there is
// none.
func leafSum(cert *tls.Certificate, err error) ([sha256.Size]byte, bool) {
	if err != nil || cert == nil || len(cert.Certificate) == 0 {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256(cert.Certificate[0]), true
}

// bind returns a copy of the connection policy's config policy that keeps
// sessions in sc for the handshake of hello, and resumes one only when it
// was made under the same policy with the certificate that the policy
// would send to hello now. A policy that asks for client certificates, or
// that has no GetCertificate (caddytls always sets it), is returned as it
// is: no tickets.
func (sc *ServerSessions) bind(policy *tls.Config, hello *tls.ClientHelloInfo) *tls.Config {
	get := policy.GetCertificate
	if get == nil || policy.ClientAuth != tls.NoClientCert {
		return policy
	}
	c := policy.Clone()
	c.GetConfigForClient = nil
	c.SessionTicketsDisabled = false
	var served [sha256.Size]byte // the leaf this handshake authenticates with
	c.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := get(h)
		if sum, ok := leafSum(cert, err); ok {
			served = sum
		}
		return cert, err
	}
	c.WrapSession = func(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		state, err := ss.Bytes()
		if err != nil {
			return nil, err
		}
		return sc.put(state, policy, served), nil
	}
	c.UnwrapSession = func(id []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
		cs := sc.take(id)
		if cs == nil || cs.policy != policy {
			return nil, nil // unknown, used, expired or another policy's: a full handshake
		}
		if now, ok := leafSum(get(hello)); !ok || now != cs.cert {
			return nil, nil // the certificate changed since
		}
		ss, err := tls.ParseSessionState(cs.state)
		if err != nil {
			return nil, nil
		}
		served = cs.cert
		return ss, nil
	}
	return c
}
