// Package dkimsign is the `smtp.checks.dkim_sign` check: DKIM signatures
// (RFC 6376; RSA-2048 and Ed25519, RFC 8463, both by default) on the mail
// that authenticated users and relay_networks clients send for the
// configured domains, with keys made on first use and kept in Caddy
// storage, and rotation that switches keys only once the new records are
// seen in DNS.
package dkimsign

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/instances"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/emersion/go-msgauth/dkim"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/mailhdr"
	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(DKIMSign{})
}

// DKIMSign signs, at the end of DATA, the messages of trusted clients
// (authenticated, relay_networks) whose From address is in one of Domains
// (or a subdomain of one: d= is then the configured domain), with every
// key of the domain's current key set. The signature covers the usual
// header fields (From, To, Cc, Subject, Date, Message-ID, Reply-To, the
// threading and MIME fields, List-Unsubscribe), From, To, Cc, Subject,
// Date and Reply-To oversigned (listed once more than they occur, so that
// none can be added later), relaxed/relaxed.
//
// Keys are made when the check first starts for a domain and kept in Caddy
// storage (smtp/dkim/<domain>/): every node sharing the storage signs with
// the same keys. `caddy smtp dkim records` prints the TXT records to
// publish. A rotation (`caddy smtp dkim rotate <domain>`, or every
// RotateEvery) makes a new key set that waits until its records are seen
// in DNS (looked up every CheckInterval through Resolvers), then signs; the
// old set is retired and its keys deleted after Grace.
//
// Put it last among a server's checks: a check after it that changes a
// signed header field would break the signature.
type DKIMSign struct {
	// Domains are the signing domains. Required.
	Domains []string `json:"domains,omitempty"`

	// Algorithms are the key types of a new key set: `rsa` (2048 bits)
	// and `ed25519`. Default: both.
	Algorithms []string `json:"algorithms,omitempty"`

	// RotateEvery starts a rotation when the current keys are this old.
	// Default: 0 (only by command).
	RotateEvery caddy.Duration `json:"rotate_every,omitempty"`

	// Grace is how long a retired key set's records should stay in DNS
	// (messages signed with it may still be verified); its keys are
	// deleted then. Default: 7d.
	Grace caddy.Duration `json:"grace,omitempty"`

	// CheckInterval is how often the keys' state is read again from
	// storage and a waiting key set's records are looked up. Default: 10m.
	CheckInterval caddy.Duration `json:"check_interval,omitempty"`

	// Resolvers are the DNS servers that the new records are looked up
	// in ("ip" or "ip:port"). Default: the servers in /etc/resolv.conf.
	Resolvers []string `json:"resolvers,omitempty"`

	storage  certmagic.Storage
	resolver *resolver.Resolver
	logger   *zap.Logger
	cancel   context.CancelFunc
	done     chan struct{}

	mu      *sync.Mutex
	signers map[string]*keySet // by domain: the keys that sign now
}

// keySet is a loaded key set.
type keySet struct {
	base string
	keys []signingKey
}

type signingKey struct {
	selector string
	signer   crypto.Signer
}

const (
	defaultGrace         = 7 * 24 * time.Hour
	defaultCheckInterval = 10 * time.Minute
	maxHeader            = 256 << 10
)

// signed are the header fields signed when present; oversigned are listed
// once more than they occur.
var (
	signed = []string{"From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
		"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
		"List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"}
	oversigned = []string{"From", "Reply-To", "To", "Cc", "Subject", "Date"}
)

// CaddyModule returns the Caddy module information.
func (DKIMSign) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.dkim_sign",
		New: func() caddy.Module { return new(DKIMSign) },
	}
}

// Provision checks the config, makes missing keys and starts the
// maintenance of the key sets.
func (s *DKIMSign) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	if len(s.Domains) == 0 {
		return fmt.Errorf("dkim_sign: give at least one domain")
	}
	for i, d := range s.Domains {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if d == "" || strings.ContainsAny(d, "/\\ @") {
			return fmt.Errorf("dkim_sign: domain %q is not a domain name", s.Domains[i])
		}
		s.Domains[i] = d
	}
	if len(s.Algorithms) == 0 {
		s.Algorithms = []string{AlgRSA, AlgEd25519}
	}
	for _, a := range s.Algorithms {
		if algSuffix[a] == "" {
			return fmt.Errorf("dkim_sign: algorithm %q: want rsa or ed25519", a)
		}
	}
	if s.RotateEvery < 0 || s.Grace < 0 || s.CheckInterval < 0 {
		return fmt.Errorf("dkim_sign: durations must not be negative")
	}
	if s.Grace == 0 {
		s.Grace = caddy.Duration(defaultGrace)
	}
	if s.CheckInterval == 0 {
		s.CheckInterval = caddy.Duration(defaultCheckInterval)
	}
	r, err := resolver.New(s.Resolvers, 10*time.Second)
	if err != nil {
		return fmt.Errorf("dkim_sign: %w", err)
	}
	s.resolver = r
	s.storage = ctx.Storage()
	s.mu = new(sync.Mutex)
	s.signers = make(map[string]*keySet)
	for _, d := range s.Domains {
		state, made, err := EnsureKeys(ctx, s.storage, d, s.Algorithms, time.Now())
		if err != nil {
			return fmt.Errorf("dkim_sign: keys of %s: %w", d, err)
		}
		if made {
			s.logger.Info("made DKIM keys; publish their records (caddy smtp dkim records)", zap.String("domain", d), zap.String("selectors", state.Current.Base+"*"))
		}
		if err := s.use(ctx, d, state.Current); err != nil {
			return fmt.Errorf("dkim_sign: keys of %s: %w", d, err)
		}
	}
	mctx, cancel := context.WithCancel(ctx)
	s.cancel, s.done = cancel, make(chan struct{})
	go s.maintain(mctx)
	running.Add(s)
	return nil
}

// Cleanup stops the maintenance.
func (s *DKIMSign) Cleanup() error {
	running.Remove(s)
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	return nil
}

// use loads a key set and makes it the one that signs for domain.
func (s *DKIMSign) use(ctx context.Context, domain string, set KeySet) error {
	s.mu.Lock()
	cur := s.signers[domain]
	s.mu.Unlock()
	if cur != nil && cur.base == set.Base {
		return nil
	}
	ks := &keySet{base: set.Base}
	for _, alg := range set.Algorithms {
		key, err := loadKey(ctx, s.storage, domain, set.Selector(alg))
		if err != nil {
			return err
		}
		ks.keys = append(ks.keys, signingKey{set.Selector(alg), key})
	}
	s.mu.Lock()
	s.signers[domain] = ks
	s.mu.Unlock()
	if cur != nil {
		s.logger.Info("signing with new DKIM keys", zap.String("domain", domain), zap.String("selectors", set.Base+"*"), zap.String("previous", cur.base+"*"))
	}
	return nil
}

// maintain refreshes every domain each CheckInterval.
func (s *DKIMSign) maintain(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(time.Duration(s.CheckInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.refreshAll(ctx)
		}
	}
}

func (s *DKIMSign) refreshAll(ctx context.Context) {
	for _, d := range s.Domains {
		if err := s.refresh(ctx, d, time.Now()); err != nil && ctx.Err() == nil {
			s.logger.Warn("DKIM key maintenance failed", zap.String("domain", d), zap.Error(err))
		}
	}
}

// refresh reads a domain's state again and moves it on: a waiting key set
// whose records are all seen in DNS becomes current (the old one retired
// until Grace has passed), retired sets past their time are deleted, and a
// rotation starts when the current keys are older than RotateEvery.
func (s *DKIMSign) refresh(ctx context.Context, domain string, now time.Time) error {
	state, err := LoadState(ctx, s.storage, domain)
	if err != nil || state == nil {
		return err
	}
	published := state.Next != nil && s.published(ctx, domain, *state.Next)
	expired := slices.ContainsFunc(state.Retired, func(k KeySet) bool { return !now.Before(k.RetireAt) })
	rotate := s.RotateEvery > 0 && state.Next == nil && now.Sub(state.Current.Created) >= time.Duration(s.RotateEvery)
	if published || expired || rotate {
		state, err = update(ctx, s.storage, domain, func(st *State) (*State, error) {
			if st == nil {
				return nil, nil
			}
			if published && st.Next != nil && st.Next.Base == state.Next.Base {
				old := st.Current
				old.RetireAt = now.Add(time.Duration(s.Grace)).UTC()
				st.Retired = append(st.Retired, old)
				st.Current, st.Next = *st.Next, nil
			}
			var keep []KeySet
			for _, r := range st.Retired {
				if now.Before(r.RetireAt) {
					keep = append(keep, r)
					continue
				}
				for _, alg := range r.Algorithms {
					_ = s.storage.Delete(ctx, keyKey(domain, r.Selector(alg)))
				}
				s.logger.Info("deleted retired DKIM keys; their records may go", zap.String("domain", domain), zap.String("selectors", r.Base+"*"))
			}
			st.Retired = keep
			if rotate && st.Next == nil {
				set, err := newKeySet(ctx, s.storage, domain, st.Current.Algorithms, now, st.taken)
				if err != nil {
					return nil, err
				}
				st.Next = &set
				s.logger.Info("DKIM key rotation started; publish the next records (caddy smtp dkim records)", zap.String("domain", domain), zap.String("selectors", set.Base+"*"))
			}
			return st, nil
		})
		if err != nil {
			return err
		}
	}
	return s.use(ctx, domain, state.Current)
}

// published reports whether every key of a set has its record in DNS.
func (s *DKIMSign) published(ctx context.Context, domain string, set KeySet) bool {
	for _, alg := range set.Algorithms {
		key, err := loadKey(ctx, s.storage, domain, set.Selector(alg))
		if err != nil {
			return false
		}
		want, err := txtRecord(key.Public())
		if err != nil {
			return false
		}
		txts, err := s.resolver.LookupTXT(ctx, set.Selector(alg)+"._domainkey."+domain)
		if err != nil || !slices.ContainsFunc(txts, func(t string) bool { return tagP(t) == tagP(want) }) {
			return false
		}
	}
	return true
}

// tagP returns the p= tag of a key record, without white space.
func tagP(record string) string {
	for _, tag := range strings.Split(record, ";") {
		if k, v, ok := strings.Cut(tag, "="); ok && strings.TrimSpace(k) == "p" {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}

// signingDomain returns the configured domain that signs for a From
// domain, "" if none.
func (s *DKIMSign) signingDomain(from string) string {
	for _, d := range s.Domains {
		if from == d || strings.HasSuffix(from, "."+d) {
			return d
		}
	}
	return ""
}

// keysFor returns the keys that sign for domain now.
func (s *DKIMSign) keysFor(domain string) *keySet {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.signers[domain]
}

// ForTrustedClients implements smtpapp.TrustedClientCheck.
func (*DKIMSign) ForTrustedClients() {}

// StartMessage implements smtpapp.MessageCheck: only trusted clients'
// messages are signed.
func (s *DKIMSign) StartMessage(in *smtpapp.MessageInput) smtpapp.MessageJudge {
	if !in.Trusted {
		return &judge{s: s, skip: true}
	}
	return &judge{s: s}
}

// judge signs one message.
type judge struct {
	s       *DKIMSign
	skip    bool
	header  []byte // until the header section is complete
	domain  string
	signers []*dkim.Signer
	keys    []signingKey
	err     error
}

func (j *judge) Write(p []byte) (int, error) {
	if j.skip || j.err != nil {
		return len(p), nil
	}
	if j.signers == nil {
		j.header = append(j.header, p...)
		end := bytes.Index(j.header, []byte("\r\n\r\n"))
		if end < 0 {
			if len(j.header) > maxHeader {
				j.skip = true
			}
			return len(p), nil
		}
		j.start(j.header[:end+2])
		if j.skip {
			return len(p), nil
		}
		p, j.header = j.header, nil
	}
	for _, sg := range j.signers {
		if _, err := sg.Write(p); err != nil {
			j.err = err
		}
	}
	return len(p), nil
}

// start picks the domain from the header section and makes the signers.
func (j *judge) start(header []byte) {
	fields := mailhdr.Fields(header)
	var from []string
	names := map[string]int{}
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ":")
		name = strings.TrimSpace(name)
		names[strings.ToLower(name)]++
		if strings.EqualFold(name, "From") {
			from = append(from, value)
		}
	}
	if len(from) != 1 {
		j.skip = true
		return
	}
	addrs, err := mail.ParseAddressList(from[0])
	if err != nil || len(addrs) != 1 {
		j.skip = true
		return
	}
	at := strings.LastIndexByte(addrs[0].Address, '@')
	j.domain = j.s.signingDomain(strings.ToLower(addrs[0].Address[at+1:]))
	ks := j.s.keysFor(j.domain)
	if j.domain == "" || ks == nil {
		j.skip = true
		return
	}
	var keys []string
	for _, k := range signed {
		n := names[strings.ToLower(k)]
		if slices.Contains(oversigned, k) {
			n++
		}
		for range n {
			keys = append(keys, k)
		}
	}
	for _, k := range ks.keys {
		sg, err := dkim.NewSigner(&dkim.SignOptions{
			Domain: j.domain, Selector: k.selector, Signer: k.signer,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
			HeaderKeys: keys,
		})
		if err != nil {
			j.err = err
			return
		}
		j.signers = append(j.signers, sg)
		j.keys = append(j.keys, k)
	}
}

func (j *judge) Abort() {
	for _, sg := range j.signers {
		_ = sg.Close()
	}
}

// Finish adds the signatures.
func (j *judge) Finish(context.Context) smtpapp.Verdict {
	if j.skip || j.signers == nil && j.err == nil {
		// not ours to sign, or no header section end (nothing to sign)
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "not signed"}
	}
	var v smtpapp.Verdict
	v.Result = smtpapp.VerdictAccept
	var sels []string
	for i, sg := range j.signers {
		if err := sg.Close(); err != nil {
			j.err = err
			continue
		}
		if j.err != nil {
			continue
		}
		sig := strings.TrimSuffix(strings.TrimPrefix(sg.Signature(), "DKIM-Signature: "), "\r\n")
		v.Headers = append(v.Headers, smtpapp.HeaderField{Name: "DKIM-Signature", Value: sig, Folded: true})
		sels = append(sels, j.keys[i].selector)
	}
	if j.err != nil {
		j.s.logger.Error("DKIM signing failed; the message goes unsigned", zap.String("domain", j.domain), zap.Error(j.err))
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "signing failed"}
	}
	v.Note = "signed d=" + j.domain + " s=" + strings.Join(sels, ",")
	return v
}

// running are the provisioned checks, so that the admin API can make a
// rotation take effect at once in this process.
var running instances.Set[*DKIMSign]

// refreshRunning refreshes every running check's domains now.
func refreshRunning(ctx context.Context) {
	running.Each(func(c *DKIMSign) { c.refreshAll(ctx) })
}

// Interface guards
var (
	_ caddy.Provisioner          = (*DKIMSign)(nil)
	_ caddy.CleanerUpper         = (*DKIMSign)(nil)
	_ smtpapp.TrustedClientCheck = (*DKIMSign)(nil)
)
