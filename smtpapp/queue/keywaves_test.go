package queue

import (
	"fmt"
	"testing"
	"time"
	"unique"
)

// TestPutOffFillsWaves: messages put off for one set of domains come due
// maxKeyRounds at a time, one keyDelay apart; once the waves have passed,
// the next starts a keyDelay from now again; other domains have waves of
// their own.
func TestPutOffFillsWaves(t *testing.T) {
	q := &Queue{keyWaves: make(map[unique.Handle[string]]*keyWave), maxKeyRounds: 2, keyDelay: time.Second}
	now := time.Unix(1_800_000_000, 0)
	slow, other := unique.Make("slow.test"), unique.Make("other.test")
	due := func(d unique.Handle[string], at time.Time) time.Duration {
		e := &entry{index: -1, domains: d}
		q.putOff(e, at)
		return e.due.Sub(now)
	}
	var got []time.Duration
	for range 5 {
		got = append(got, due(slow, now))
	}
	want := []time.Duration{time.Second, time.Second, 2 * time.Second, 2 * time.Second, 3 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("put-off times %v, want %v", got, want)
		}
	}
	if d := due(other, now); d != time.Second {
		t.Fatalf("another domain's first put-off message is due in %v, want 1s", d)
	}
	if d := due(slow, now.Add(10*time.Second)); d != 11*time.Second {
		t.Fatalf("after the waves passed, due in %v from the start, want 11s", d)
	}
	if q.due.Len() != 7 {
		t.Fatalf("%d entries scheduled, want 7", q.due.Len())
	}
}

// TestPassStopsAfterPutOffs: a pass of runDue that has put off
// maxKeyRounds messages stops, so that q.mu is let go between passes
// (a million due messages to one stuck destination would otherwise hold
// it for the whole heap); the messages left are still due and the pass
// asks to run again at once.
func TestPassStopsAfterPutOffs(t *testing.T) {
	q := &Queue{
		closing:      make(chan struct{}),
		maxRounds:    100,
		keyRounds:    make(map[unique.Handle[string]]int),
		keyWaves:     make(map[unique.Handle[string]]*keyWave),
		maxKeyRounds: 2,
		keyDelay:     time.Second,
	}
	q.initAdmin()
	q.bindings = []*binding{{cfg: Config{Workers: 1, PerDestination: 1}}}
	slow := unique.Make("slow.test")
	q.keyRounds[slow] = q.maxKeyRounds // its slots are taken
	past := time.Now().Add(-time.Minute)
	for i := range 5 {
		q.schedule(&entry{id: fmt.Sprint(i), index: -1, domains: slow}, past)
	}

	next := q.runDue()
	now := time.Now()
	stillDue := 0
	for _, e := range q.due {
		if !e.due.After(now) {
			stillDue++
		}
	}
	if stillDue != 3 {
		t.Fatalf("%d of 5 messages still due after one pass, want 3 (2 put off)", stillDue)
	}
	if next.IsZero() || next.After(now) {
		t.Fatalf("next pass at %v, want at once (before %v)", next, now)
	}
	if q.rounds != 0 {
		t.Fatalf("%d rounds started for a destination at its cap", q.rounds)
	}
}
