// Package dkim is the `smtp.checks.dkim` check: DKIM signatures (RFC
// 6376; RSA and Ed25519, RFC 8463) of incoming messages are verified at
// the end of DATA, and the results go into the message's
// Authentication-Results header, where the dmarc check finds them.
package dkim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/ttlcache"
	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(DKIM{})
}

// DKIM verifies the DKIM-Signature header fields of a message while it
// streams in (the key lookups run while the body arrives) and records one
// result per signature: dkim=pass, fail (the signature or the body hash
// does not match), permerror (a broken signature, or no key published),
// temperror (the key could not be looked up), or dkim=none for a message
// without signatures. It refuses nothing itself: DMARC (the dmarc check)
// acts on the results; a signature alone proves nothing about the From
// address.
type DKIM struct {
	// Resolvers are the DNS servers that key records are asked from ("ip"
	// or "ip:port"). Default: the servers in /etc/resolv.conf.
	Resolvers []string `json:"resolvers,omitempty"`

	// Timeout bounds the key lookups of one message. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// MaxSignatures is how many signatures of a message are verified, the
	// first ones in the header; the others are ignored. Default: 5.
	MaxSignatures int `json:"max_signatures,omitempty"`

	// CacheTTL is how long a key record (or its absence) is kept. Default:
	// 5m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	resolver *resolver.Resolver
	logger   *zap.Logger
	keys     *ttlcache.Cache[string, cachedKey]
}

// cachedKey is a key lookup's answer.
type cachedKey struct {
	txts     []string
	notFound bool
}

const (
	defaultTimeout       = 10 * time.Second
	defaultMaxSignatures = 5
	defaultCacheTTL      = 5 * time.Minute
	cacheMax             = 10_000
	// pipeLimit is how much of a message waits for the verifier (while it
	// looks up keys) before the transfer waits too.
	pipeLimit = 1 << 20
)

// CaddyModule returns the Caddy module information.
func (DKIM) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.dkim",
		New: func() caddy.Module { return new(DKIM) },
	}
}

// Provision sets the defaults and the resolver.
func (d *DKIM) Provision(ctx caddy.Context) error {
	d.logger = ctx.Logger()
	if d.Timeout < 0 || d.MaxSignatures < 0 || d.CacheTTL < 0 {
		return fmt.Errorf("dkim: timeout, max_signatures and cache_ttl must not be negative")
	}
	if d.CacheTTL == 0 {
		d.CacheTTL = caddy.Duration(defaultCacheTTL)
	}
	d.keys = ttlcache.New[string, cachedKey](cacheMax)
	if d.Timeout == 0 {
		d.Timeout = caddy.Duration(defaultTimeout)
	}
	if d.MaxSignatures == 0 {
		d.MaxSignatures = defaultMaxSignatures
	}
	r, err := resolver.New(d.Resolvers, time.Duration(d.Timeout))
	if err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	d.resolver = r
	return nil
}

// StartMessage implements smtpapp.MessageCheck: the verifier reads the
// message from a pipe as it arrives.
func (d *DKIM) StartMessage(in *smtpapp.MessageInput) smtpapp.MessageJudge {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(d.Timeout))
	j := &judge{d: d, tx: in.Tx, cancel: cancel, pipe: newPipe(pipeLimit), done: make(chan struct{})}
	go func() {
		defer close(j.done)
		defer cancel()
		j.verifs, j.err = dkim.VerifyWithOptions(j.pipe, &dkim.VerifyOptions{
			LookupTXT:        func(name string) ([]string, error) { return d.lookupTXT(ctx, name) },
			MaxVerifications: d.MaxSignatures,
		})
		j.pipe.closeRead() // the rest of the message is not needed
	}()
	return j
}

// lookupTXT is the verifier's key lookup, with our resolver's errors
// turned into what go-msgauth tells apart: a temporary *net.DNSError is a
// temperror, anything else a permerror (no key).
// Answers and NotFound are cached for CacheTTL.
func (d *DKIM) lookupTXT(ctx context.Context, name string) ([]string, error) {
	key := strings.ToLower(name)
	now := time.Now()
	c, ok := d.keys.Get(key, now)
	if !ok {
		txts, err := d.resolver.LookupTXT(ctx, name)
		if err != nil && !resolver.IsNotFound(err) {
			return nil, &net.DNSError{Err: err.Error(), Name: name, IsTemporary: resolver.IsTemporary(err)}
		}
		c = cachedKey{txts: txts, notFound: err != nil}
		d.keys.Put(key, c, now, time.Duration(d.CacheTTL))
	}
	if c.notFound {
		return nil, &net.DNSError{Err: "no such key record", Name: name, IsNotFound: true}
	}
	return c.txts, nil
}

// judge verifies one message.
type judge struct {
	d      *DKIM
	tx     *smtpapp.Transaction
	cancel context.CancelFunc
	pipe   *pipe
	done   chan struct{}
	verifs []*dkim.Verification
	err    error
}

func (j *judge) Write(p []byte) (int, error) { return j.pipe.Write(p) }

func (j *judge) Abort() {
	j.cancel()
	j.pipe.closeWrite()
	j.pipe.closeRead()
}

// Finish waits for the verifier and records its results.
func (j *judge) Finish(ctx context.Context) smtpapp.Verdict {
	j.pipe.closeWrite()
	select {
	case <-j.done:
	case <-ctx.Done():
		j.Abort()
		j.tx.SetAuthResult("dkim", &authres.DKIMResult{Value: authres.ResultTempError, Reason: "verification timed out"})
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "temperror"}
	}
	if j.err != nil && !errors.Is(j.err, dkim.ErrTooManySignatures) && len(j.verifs) == 0 {
		// The header section could not be parsed.
		j.tx.SetAuthResult("dkim", &authres.DKIMResult{Value: authres.ResultPermError, Reason: "malformed header"})
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "permerror", Reason: j.err.Error()}
	}
	if len(j.verifs) == 0 {
		j.tx.SetAuthResult("dkim", &authres.DKIMResult{Value: authres.ResultNone})
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "none"}
	}
	var notes []string
	for i, v := range j.verifs {
		r := &authres.DKIMResult{Value: resultOf(v.Err), Domain: v.Domain, Identifier: v.Identifier}
		if v.Err != nil {
			r.Reason = reasonOf(v.Err)
		}
		j.tx.SetAuthResult(fmt.Sprintf("dkim:%d", i), r)
		notes = append(notes, string(r.Value)+" "+v.Domain)
	}
	return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: strings.Join(notes, ", ")}
}

// resultOf maps a verification error to the RFC 8601 result.
func resultOf(err error) authres.ResultValue {
	switch {
	case err == nil:
		return authres.ResultPass
	case dkim.IsTempFail(err):
		return authres.ResultTempError
	case dkim.IsPermFail(err):
		return authres.ResultPermError
	}
	return authres.ResultFail
}

// reasonOf is the reason text for the header: go-msgauth's message
// without its "dkim: " prefix and without resolver details (server
// addresses stay out of headers).
func reasonOf(err error) string {
	s := strings.TrimPrefix(err.Error(), "dkim: ")
	if i := strings.Index(s, ": lookup "); i >= 0 {
		s = s[:i]
	}
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

// pipe hands the message to the verifier: writes wait only while more
// than limit bytes are buffered, and are discarded once the verifier has
// stopped reading.
type pipe struct {
	mu         sync.Mutex
	cond       *sync.Cond
	buf        bytes.Buffer
	limit      int
	closed     bool // no more writes
	readerGone bool
}

func newPipe(limit int) *pipe {
	p := &pipe{limit: limit}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *pipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.buf.Len() >= p.limit && !p.readerGone {
		p.cond.Wait()
	}
	if !p.readerGone && !p.closed {
		p.buf.Write(b)
		p.cond.Broadcast()
	}
	return len(b), nil
}

func (p *pipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.buf.Len() == 0 && !p.closed {
		p.cond.Wait()
	}
	if p.buf.Len() == 0 {
		return 0, io.EOF
	}
	n, _ := p.buf.Read(b)
	p.cond.Broadcast()
	return n, nil
}

func (p *pipe) closeWrite() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *pipe) closeRead() {
	p.mu.Lock()
	p.readerGone = true
	p.buf = bytes.Buffer{}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Interface guards
var (
	_ caddy.Provisioner    = (*DKIM)(nil)
	_ smtpapp.MessageCheck = (*DKIM)(nil)
)
