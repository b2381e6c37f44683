package queue

import (
	"testing"
	"time"
)

// TestBackoff: the wait before the next attempt is the message's age,
// between RetryInitial and RetryMax: it doubles as the message ages, and
// the number of attempts (flushes) plays no part.
func TestBackoff(t *testing.T) {
	cfg := Config{RetryInitial: time.Minute, RetryMax: time.Hour}
	for age, want := range map[time.Duration]time.Duration{
		0: time.Minute, 30 * time.Second: time.Minute, 2 * time.Minute: 2 * time.Minute,
		5 * time.Minute: 5 * time.Minute, 3 * time.Hour: time.Hour,
	} {
		got := backoff(age, cfg)
		if got < want*8/10 || got > want*12/10 {
			t.Errorf("backoff(age %v) = %v, want %v ±20%%", age, got, want)
		}
	}
}
