package tlsupgrade

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
)

// Outbound TLS sessions are kept for resumption: the next connection to the
// same next hop offers the session (a TLS 1.3 PSK or a TLS 1.2 ticket) and,
// when the server takes it, skips the certificate chain and its signature.
// A session is only offered to a connection with the same scope: the
// address dialed, the server name, implicit TLS or STARTTLS, the policy
// (level, TLSA records, DANE names, MTA-STS policy) and the roots. The
// certificate of a resumed session is checked again against the policy all
// the same (crypto/tls calls VerifyConnection on resumed connections, with
// the session's certificates).

// SessionCacheSize is the number of sessions the process-wide outbound
// session cache keeps (least recently used go first).
const SessionCacheSize = 1024

// sharedSessions is the default Options.SessionCache.
var sharedSessions = tls.NewLRUClientSessionCache(SessionCacheSize)

// scopedSessions is a session cache as one connection sees it: its keys
// (crypto/tls uses the server name) are prefixed with the scope.
type scopedSessions struct {
	scope string
	cache tls.ClientSessionCache
}

func (s scopedSessions) Get(key string) (*tls.ClientSessionState, bool) {
	return s.cache.Get(s.scope + key)
}

func (s scopedSessions) Put(key string, cs *tls.ClientSessionState) {
	s.cache.Put(s.scope+key, cs)
}

// sessionScope names what a resumed session must have in common with the
// connection that made it.
func sessionScope(addr string, o Options) string {
	h := sha256.New()
	p := o.Policy
	// The pool's address stands for the roots: one config uses one pool.
	// (A pool made at the address of a freed one would share its scope;
	// the certificate is checked against the new pool all the same.)
	fmt.Fprintf(h, "%q %q %t %q %p\n", addr, o.ServerName, o.ImplicitTLS, p.level(), o.RootCAs)
	for _, r := range p.TLSA {
		fmt.Fprintf(h, "tlsa %d %d %d %x\n", r.Usage, r.Selector, r.MatchingType, r.Data)
	}
	fmt.Fprintf(h, "dane names %q\n", p.DANENames)
	if sts := p.MTASTS; sts != nil {
		fmt.Fprintf(h, "mta-sts %q %q %q\n", sts.Version, sts.Mode, sts.MX)
	}
	return hex.EncodeToString(h.Sum(nil)) + " "
}

// Interface guards
var _ tls.ClientSessionCache = scopedSessions{}
