package tlsupgrade

import (
	"errors"
	"io/fs"
	"net/http"
	"sync"
	"testing"
	"time"
)

// memStore is an MTASTSStore in memory, as certmagic storage would be.
type memStore struct {
	mu   sync.Mutex
	data map[string][]byte
	puts int
}

func (s *memStore) Get(key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.data[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return b, nil
}

func (s *memStore) Put(key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data == nil {
		s.data = make(map[string][]byte)
	}
	s.data[key] = value
	s.puts++
	return nil
}

// stsFixture is a domain with an MTA-STS record in DNS and a policy host,
// and a cache with a clock the test moves.
type stsFixture struct {
	t       *testing.T
	policy  *policyHandler
	cache   *MTASTSCache
	store   *memStore
	setTXT  func(txt ...string)
	now     time.Time
	fetched func() int
}

func newSTSFixture(t *testing.T) *stsFixture {
	ca := newTestCA(t)
	dns, res := newDNS(t)
	h := &policyHandler{body: testPolicy}
	ph := startPolicyHost(t, ca, "example.test", h)
	f := &stsFixture{t: t, policy: h, store: &memStore{}, now: time.Now(), fetched: h.count}
	f.setTXT = func(txt ...string) {
		dns.Remove("_mta-sts.example.test")
		for _, s := range txt {
			dns.AddTXT("_mta-sts.example.test", s)
		}
	}
	f.setTXT("v=STSv1; id=1;")
	f.cache = f.newCache(ph.fetcher, res)
	return f
}

func (f *stsFixture) newCache(fetcher *MTASTSFetcher, r TXTResolver) *MTASTSCache {
	return &MTASTSCache{Resolver: r, Fetcher: fetcher, Store: f.store, now: func() time.Time { return f.now }}
}

// lookup looks the domain up and checks the mode of the policy ("" for no
// policy) and the number of fetches so far.
func (f *stsFixture) lookup(wantMode MTASTSMode, wantFetches int) error {
	f.t.Helper()
	p, err := f.cache.Lookup(testContext(f.t), "example.test")
	mode := MTASTSMode("")
	if p != nil {
		mode = p.Mode
	}
	if mode != wantMode {
		f.t.Errorf("policy %+v (err %v), want mode %q", p, err, wantMode)
	}
	if n := f.fetched(); n != wantFetches {
		f.t.Errorf("%d fetches, want %d", n, wantFetches)
	}
	return err
}

func TestMTASTSCache(t *testing.T) {
	t.Run("served from cache", func(t *testing.T) {
		checkLeaks(t)
		f := newSTSFixture(t)
		f.lookup(MTASTSEnforce, 1)
		f.now = f.now.Add(time.Hour)
		f.lookup(MTASTSEnforce, 1)
		if f.store.puts != 1 {
			t.Errorf("%d puts, want 1", f.store.puts)
		}
	})
	t.Run("id change triggers a fetch", func(t *testing.T) {
		checkLeaks(t)
		f := newSTSFixture(t)
		f.lookup(MTASTSEnforce, 1)
		f.policy.set(0, "version: STSv1\nmode: testing\nmx: *.mx.test\nmax_age: 86400\n")
		f.lookup(MTASTSEnforce, 1) // same id: the cached policy
		f.setTXT("v=STSv1; id=2;")
		f.lookup(MTASTSTesting, 2)
		f.lookup(MTASTSTesting, 2)
	})
	t.Run("failed fetch keeps the cached policy until max_age", func(t *testing.T) {
		checkLeaks(t)
		f := newSTSFixture(t)
		f.lookup(MTASTSEnforce, 1)
		f.policy.set(http.StatusInternalServerError, "down")
		f.setTXT("v=STSv1; id=2;")
		f.now = f.now.Add(23 * time.Hour)
		if err := f.lookup(MTASTSEnforce, 2); err != nil {
			t.Errorf("err = %v with a cached policy", err)
		}
		f.now = f.now.Add(2 * time.Hour) // 25 hours: max_age has passed
		err := f.lookup("", 3)
		if pe, ok := errors.AsType[*PolicyError](err); !ok || pe.ResultType != ResultSTSPolicyFetchError {
			t.Errorf("err = %v, want an sts-policy-fetch-error", err)
		}
	})
	t.Run("record gone keeps the cached policy until max_age", func(t *testing.T) {
		checkLeaks(t)
		f := newSTSFixture(t)
		f.lookup(MTASTSEnforce, 1)
		f.setTXT()
		f.now = f.now.Add(23 * time.Hour)
		f.lookup(MTASTSEnforce, 1)
		f.now = f.now.Add(2 * time.Hour)
		if err := f.lookup("", 1); err != nil {
			t.Errorf("err = %v, want none: the domain has no policy", err)
		}
	})
	t.Run("refreshed after a day with the same id", func(t *testing.T) {
		checkLeaks(t)
		f := newSTSFixture(t)
		f.policy.set(0, "version: STSv1\nmode: enforce\nmx: *.mx.test\nmax_age: 604800\n")
		f.lookup(MTASTSEnforce, 1)
		f.now = f.now.Add(MTASTSRefreshAge + time.Minute)
		f.policy.set(http.StatusServiceUnavailable, "")
		f.lookup(MTASTSEnforce, 2) // refresh failed: still cached
		f.policy.set(0, "version: STSv1\nmode: testing\nmx: *.mx.test\nmax_age: 604800\n")
		f.lookup(MTASTSTesting, 3)
	})
	t.Run("no record, no policy", func(t *testing.T) {
		checkLeaks(t)
		f := newSTSFixture(t)
		for _, txts := range [][]string{
			nil,
			{"v=spf1 -all"},
			{"v=STSv1; id=1;", "v=STSv1; id=2;"}, // not exactly one
			{"v=STSv1; id=bad-id;"},
			{"v=STSv1 id=1"},
		} {
			f.setTXT(txts...)
			if err := f.lookup("", 0); err != nil {
				t.Errorf("%q: err = %v", txts, err)
			}
		}
		f.setTXT("v=spf1 -all", "v=STSv1; id=1;") // other records do not count
		f.lookup(MTASTSEnforce, 1)
	})
	t.Run("store survives a restart", func(t *testing.T) {
		checkLeaks(t)
		f := newSTSFixture(t)
		f.lookup(MTASTSEnforce, 1)
		// A new cache on the same store, and a policy host that is down.
		f.policy.set(http.StatusInternalServerError, "down")
		f.cache = f.newCache(f.cache.Fetcher, f.cache.Resolver)
		f.lookup(MTASTSEnforce, 1)
	})
	t.Run("concurrent lookups fetch once", func(t *testing.T) {
		checkLeaks(t)
		f := newSTSFixture(t)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if p, err := f.cache.Lookup(testContext(t), "example.test"); p == nil || err != nil {
					t.Errorf("Lookup = %v, %v", p, err)
				}
			})
		}
		wg.Wait()
		if n := f.fetched(); n != 1 {
			t.Errorf("%d fetches, want 1", n)
		}
	})
}
