package tlsupgrade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddy-smtp/caddy-smtp/resolver"
)

// TXTResolver looks up TXT records; *resolver.Resolver satisfies it. A
// name without TXT records is reported with an error for which
// resolver.IsNotFound is true.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// MTASTSStore keeps cached policies across restarts (and, shared, across a
// fleet). Get returns an error wrapping fs.ErrNotExist for a key it does not
// have; any Get error counts as a miss. Put stores value under key. The
// caller can back it with Caddy's storage: Get is certmagic.Storage.Load and
// Put is Store, with a context of its choice.
type MTASTSStore interface {
	Get(key string) ([]byte, error)
	Put(key string, value []byte) error
}

// MTASTSRefreshAge is the age after which a cached policy is fetched again
// even though the id in DNS did not change, so that the cache rarely relies
// on a fetch at the very moment the policy expires (RFC 8461 section 10.2
// suggests refreshing before max_age). A failed refresh keeps the cached
// policy.
const MTASTSRefreshAge = 24 * time.Hour

// MTASTSCache discovers, fetches and caches the MTA-STS policies of
// recipient domains (RFC 8461 sections 3 and 5.1). Policies live in memory
// and, when Store is set, in the store under "mta-sts/<domain>.json". The
// zero value is not usable: set Resolver. Its methods are safe for
// concurrent use; do not change its fields after the first Lookup.
type MTASTSCache struct {
	// Resolver looks up _mta-sts.<domain>. Required.
	Resolver TXTResolver
	// Fetcher fetches policies. Default: an MTASTSFetcher with its
	// defaults.
	Fetcher *MTASTSFetcher
	// Store keeps policies across restarts. Default: memory only.
	Store MTASTSStore

	// now is the clock; tests replace it.
	now func() time.Time

	mu       sync.Mutex
	entries  map[string]*mtastsEntry
	inflight map[string]*mtastsCall
	fetcher  *MTASTSFetcher
}

// mtastsEntry is one cached policy, as stored.
type mtastsEntry struct {
	// ID is the id of the TXT record the policy was fetched under.
	ID string `json:"id"`
	// Fetched is when it was fetched.
	Fetched time.Time `json:"fetched"`
	// Policy is the policy file, re-parsed on load.
	Policy string `json:"policy"`

	policy *MTASTSPolicy
}

// validAt reports whether the entry's max_age has not passed at now.
func (e *mtastsEntry) validAt(now time.Time) bool {
	return e != nil && now.Before(e.Fetched.Add(e.policy.MaxAge))
}

// mtastsCall is a Lookup in progress, which concurrent Lookups of the same
// domain wait for.
type mtastsCall struct {
	done   chan struct{}
	policy *MTASTSPolicy
	err    error
}

// Lookup returns the MTA-STS policy that applies to mail for domain (the
// recipient domain, in A-label form), following RFC 8461:
//
//   - The TXT record _mta-sts.<domain> is looked up at every call. Records
//     that do not begin with "v=STSv1;" are ignored; if not exactly one
//     remains, or it does not parse, the domain has no policy in DNS.
//   - With a record whose id equals that of the cached policy, the cached
//     policy is used while its max_age lasts (fetched again after
//     MTASTSRefreshAge); with a new id, or no valid cached policy, the
//     policy is fetched and cached with the id.
//   - When the record is gone, DNS fails or the fetch fails, a cached
//     policy still within its max_age is used (RFC 8461 sections 3.3 and
//     5.1): the id only says that the policy changed.
//
// It returns (nil, nil) when the domain has no policy, and (nil, err) when
// discovery failed and nothing is cached: the caller then delivers as if
// the domain had no policy (RFC 8461 section 3.3) and may report err, a
// *PolicyError with an RFC 8460 result type. A policy in mode none is
// returned as it is; [SelectPolicy] ignores it.
func (c *MTASTSCache) Lookup(ctx context.Context, domain string) (*MTASTSPolicy, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	c.mu.Lock()
	if c.inflight == nil {
		c.inflight = make(map[string]*mtastsCall)
		c.entries = make(map[string]*mtastsEntry)
		c.fetcher = c.Fetcher
		if c.fetcher == nil {
			c.fetcher = &MTASTSFetcher{}
		}
	}
	if call, ok := c.inflight[domain]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.policy, call.err
		case <-ctx.Done():
			return nil, &PolicyError{ResultType: ResultSTSPolicyFetchError, Err: ctx.Err()}
		}
	}
	call := &mtastsCall{done: make(chan struct{})}
	c.inflight[domain] = call
	c.mu.Unlock()

	call.policy, call.err = c.lookup(ctx, domain)

	c.mu.Lock()
	delete(c.inflight, domain)
	c.mu.Unlock()
	close(call.done)
	return call.policy, call.err
}

// lookup does the work of Lookup for one domain at a time.
func (c *MTASTSCache) lookup(ctx context.Context, domain string) (*MTASTSPolicy, error) {
	now := c.clock()
	cached := c.cached(domain)
	if !cached.validAt(now) {
		cached = nil
	}
	id, err := c.lookupID(ctx, domain)
	switch {
	case err != nil && cached != nil:
		return cached.policy, nil
	case err != nil:
		return nil, err
	case id == "" && cached != nil:
		return cached.policy, nil
	case id == "":
		return nil, nil
	case cached != nil && cached.ID == id && now.Sub(cached.Fetched) < MTASTSRefreshAge:
		return cached.policy, nil
	}
	p, err := c.fetcher.Fetch(ctx, domain)
	if err != nil {
		if cached != nil {
			return cached.policy, nil
		}
		return nil, err
	}
	c.save(domain, &mtastsEntry{ID: id, Fetched: now, Policy: p.String(), policy: p})
	return p, nil
}

// lookupID returns the id of the domain's MTA-STS record, "" when it has
// no usable record.
func (c *MTASTSCache) lookupID(ctx context.Context, domain string) (string, error) {
	txts, err := c.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	if resolver.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", &PolicyError{ResultType: ResultSTSPolicyFetchError, Err: err}
	}
	txt, ok := singleRecord(txts, "v=STSv1;")
	if !ok {
		return "", nil
	}
	rec, err := ParseMTASTSRecord(txt)
	if err != nil {
		return "", nil
	}
	return rec.ID, nil
}

// storeKey is the key of a domain's policy in the store.
func storeKey(domain string) string {
	return "mta-sts/" + domain + ".json"
}

// cached returns the cached entry of domain, from memory or else from the
// store; nil when there is none.
func (c *MTASTSCache) cached(domain string) *mtastsEntry {
	c.mu.Lock()
	e := c.entries[domain]
	c.mu.Unlock()
	if e != nil || c.Store == nil {
		return e
	}
	b, err := c.Store.Get(storeKey(domain))
	if err != nil {
		return nil
	}
	e, err = decodeEntry(b)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	c.entries[domain] = e
	c.mu.Unlock()
	return e
}

// decodeEntry parses a stored entry.
func decodeEntry(b []byte) (*mtastsEntry, error) {
	var e mtastsEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	p, err := ParseMTASTSPolicy([]byte(e.Policy))
	if err != nil {
		return nil, fmt.Errorf("stored policy: %w", err)
	}
	if e.ID == "" || e.Fetched.IsZero() {
		return nil, errors.New("stored policy: no id or fetch time")
	}
	e.policy = p
	return &e, nil
}

// save caches e in memory and in the store. A store that fails only costs
// the persistence: the policy stays cached in memory.
func (c *MTASTSCache) save(domain string, e *mtastsEntry) {
	c.mu.Lock()
	c.entries[domain] = e
	c.mu.Unlock()
	if c.Store == nil {
		return
	}
	if b, err := json.Marshal(e); err == nil {
		c.Store.Put(storeKey(domain), b)
	}
}

func (c *MTASTSCache) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}
