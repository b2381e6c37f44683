package callout

import (
	"fmt"
	"testing"
	"time"
)

// TestCacheBoundedAndExpiring: the cache never holds more than its size,
// drops the entry that expires first, and forgets expired answers.
func TestCacheBoundedAndExpiring(t *testing.T) {
	now := time.Now()
	c := newCache(3)
	for i := range 10 {
		c.put(fmt.Sprintf("u%d@example.test", i), i%2 == 0, now.Add(time.Duration(i+1)*time.Hour))
		if len(c.entries) > 3 {
			t.Fatalf("%d entries after %d puts, want at most 3", len(c.entries), i+1)
		}
	}
	if known, ok := c.get("u9@example.test", now); !ok || known {
		t.Errorf("newest entry: known=%v ok=%v, want a cached refusal", known, ok)
	}
	if _, ok := c.get("u0@example.test", now); ok {
		t.Error("the entry expiring first is still there")
	}
	if _, ok := c.get("u9@example.test", now.Add(11*time.Hour)); ok {
		t.Error("an expired answer is still given")
	}
}
