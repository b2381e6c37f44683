package queue

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	cfg := Config{RetryInitial: time.Minute, RetryMax: time.Hour}
	for n, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 10: time.Hour, 100: time.Hour} {
		got := backoff(n, cfg)
		if got < want*8/10 || got > want*12/10 {
			t.Errorf("backoff(%d) = %v, want %v ±20%%", n, got, want)
		}
	}
}
