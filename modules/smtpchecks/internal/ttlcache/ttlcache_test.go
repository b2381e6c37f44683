package ttlcache

import (
	"testing"
	"time"
)

// TestCache: values expire after their TTL, and a full cache drops expired
// entries first, then others, never growing past its bound.
func TestCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := New[string, int](3)
	c.Put("a", 1, now, time.Minute)
	c.Put("b", 2, now, time.Second)
	if v, ok := c.Get("a", now.Add(30*time.Second)); !ok || v != 1 {
		t.Fatalf("a: %d %v", v, ok)
	}
	if _, ok := c.Get("b", now.Add(2*time.Second)); ok {
		t.Fatal("b did not expire")
	}
	c.Put("c", 3, now, time.Minute)
	c.Put("d", 4, now.Add(2*time.Second), time.Minute) // full: b (expired) goes
	if c.Len() != 3 {
		t.Fatalf("len %d, want 3", c.Len())
	}
	for _, k := range []string{"a", "c", "d"} {
		if _, ok := c.Get(k, now.Add(3*time.Second)); !ok {
			t.Errorf("%s dropped while an expired entry was there", k)
		}
	}
	c.Put("e", 5, now.Add(3*time.Second), time.Minute) // full, none expired: one goes
	if c.Len() != 3 {
		t.Fatalf("len %d after adding to a full cache, want 3", c.Len())
	}
	if v, ok := c.Get("e", now.Add(3*time.Second)); !ok || v != 5 {
		t.Fatal("the new entry is missing")
	}
	c.Put("e", 6, now.Add(3*time.Second), time.Minute) // replacing drops nothing
	if c.Len() != 3 {
		t.Fatalf("len %d after replacing, want 3", c.Len())
	}
}
