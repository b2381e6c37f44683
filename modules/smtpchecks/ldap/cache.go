package ldap

import (
	"container/list"
	"sync"
	"time"
)

// cache remembers the directory's answers per address until they expire,
// for all sessions. When full, it forgets the address used least recently.
type cache struct {
	mu    sync.Mutex
	max   int
	byKey map[string]*list.Element // of order, holding *answer
	order *list.List               // most recently used first
}

type answer struct {
	addr    string
	found   bool
	expires time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, byKey: make(map[string]*list.Element), order: list.New()}
}

// get returns the answer remembered for addr, if it has not expired.
func (c *cache) get(addr string, now time.Time) (found, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byKey[addr]
	if !ok {
		return false, false
	}
	a := el.Value.(*answer)
	if !now.Before(a.expires) {
		c.order.Remove(el)
		delete(c.byKey, addr)
		return false, false
	}
	c.order.MoveToFront(el)
	return a.found, true
}

// put remembers an answer until expires.
func (c *cache) put(addr string, found bool, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[addr]; ok {
		a := el.Value.(*answer)
		a.found, a.expires = found, expires
		c.order.MoveToFront(el)
		return
	}
	c.byKey[addr] = c.order.PushFront(&answer{addr, found, expires})
	for len(c.byKey) > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*answer).addr)
	}
}
