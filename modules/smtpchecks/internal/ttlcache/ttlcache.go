// Package ttlcache is the bounded cache with expiry that the check modules
// keep their lookups in (DNS answers, policies, callout replies), shared by
// all sessions.
package ttlcache

import (
	"sync"
	"time"
)

// Cache maps keys to values for a time each. It holds at most Max entries:
// adding one to a full cache first drops the expired entries, then, if
// still full, entries in map order. The zero value is not usable: use New.
type Cache[K comparable, V any] struct {
	mu      sync.Mutex
	max     int
	entries map[K]entry[V]
}

type entry[V any] struct {
	v       V
	expires time.Time
}

// New returns a cache of at most max entries.
func New[K comparable, V any](max int) *Cache[K, V] {
	return &Cache[K, V]{max: max, entries: make(map[K]entry[V])}
}

// Get returns the value for k if it has not expired at now.
func (c *Cache[K, V]) Get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Put stores v for k until now+ttl.
func (c *Cache[K, V]) Put(k K, v V, now time.Time, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		for old, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, old)
			}
		}
		for old := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, old)
		}
	}
	c.entries[k] = entry[V]{v, now.Add(ttl)}
}

// Len returns the number of entries, expired ones included.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
