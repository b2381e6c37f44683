package queue

import (
	"reflect"
	"testing"
	"time"
)

func TestFilterMatch(t *testing.T) {
	now := time.Now()
	rcpts := func(addrs ...string) []RecipientSnapshot {
		var out []RecipientSnapshot
		for _, a := range addrs {
			out = append(out, RecipientSnapshot{Addr: a, Status: "pending"})
		}
		return out
	}
	plain := Snapshot{From: "Alice@Sender.test", State: StateDeferred, Arrived: now.Add(-2 * time.Hour),
		Recipients: append(rcpts("b@example.test"), RecipientSnapshot{Addr: "done@other.test", Status: "delivered"})}
	bounce := Snapshot{From: "", State: StateQueued, Arrived: now, Recipients: rcpts("alice@sender.test")}
	held := Snapshot{From: "c@sender.test", State: StateHeld, Held: true, Arrived: now, Recipients: rcpts("x@example.test")}
	quarantined := Snapshot{From: "d@spam.test", State: StateQuarantine, Held: true, Arrived: now, Recipients: rcpts("x@example.test")}
	all := []Snapshot{plain, bounce, held, quarantined}
	for _, tc := range []struct {
		name string
		f    Filter
		want []bool // plain, bounce, held, quarantined
	}{
		{"no filter leaves out the quarantine", Filter{}, []bool{true, true, true, false}},
		{"sender address, any case", Filter{From: "alice@sender.TEST"}, []bool{true, false, false, false}},
		{"sender domain", Filter{From: "@sender.test"}, []bool{true, false, true, false}},
		{"null sender", Filter{From: "<>"}, []bool{false, true, false, false}},
		{"pending recipient only", Filter{To: "done@other.test"}, []bool{false, false, false, false}},
		{"recipient", Filter{To: "B@example.test"}, []bool{true, false, false, false}},
		{"recipient domain", Filter{Domain: "Example.Test."}, []bool{true, false, true, false}},
		{"recipient domain with @", Filter{Domain: "@example.test"}, []bool{true, false, true, false}},
		{"older than", Filter{OlderThan: time.Hour}, []bool{true, false, false, false}},
		{"held", Filter{Held: true}, []bool{false, false, true, false}},
		{"quarantined", Filter{Quarantined: true}, []bool{false, false, false, true}},
		{"held or quarantined", Filter{Held: true, Quarantined: true, Domain: "example.test"}, []bool{false, false, true, true}},
		{"every field must match", Filter{From: "@sender.test", Domain: "example.test", OlderThan: time.Hour}, []bool{true, false, false, false}},
	} {
		for i, s := range all {
			if got := tc.f.Match(s, now); got != tc.want[i] {
				t.Errorf("%s: message %d: %v, want %v", tc.name, i, got, tc.want[i])
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	now := time.Now()
	msg := func(age time.Duration, rcpts ...string) Snapshot {
		s := Snapshot{Arrived: now.Add(-age)}
		for _, r := range rcpts {
			s.Recipients = append(s.Recipients, RecipientSnapshot{Addr: r, Status: "pending"})
		}
		return s
	}
	done := msg(time.Minute, "z@c.test")
	done.Recipients[0].Status = "delivered"
	sum := Summarize([]Snapshot{
		msg(time.Minute, "a@a.test", "b@a.test", "c@b.test"),
		msg(7*time.Minute, "a@a.test"),
		msg(5*time.Minute, "a@b.test"), // 5m is in 5-10m
		msg(10*time.Hour, "a@a.test"),
		done,
	}, now)
	wantBuckets := []string{"0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160-320m", "320m+"}
	if !reflect.DeepEqual(sum.Buckets, wantBuckets) {
		t.Fatalf("buckets %q", sum.Buckets)
	}
	want := []DomainSummary{
		{Domain: "a.test", Messages: 3, Recipients: 4, ByAge: []int{1, 1, 0, 0, 0, 0, 0, 1}, RecipientsByAge: []int{2, 1, 0, 0, 0, 0, 0, 1}},
		{Domain: "b.test", Messages: 2, Recipients: 2, ByAge: []int{1, 1, 0, 0, 0, 0, 0, 0}, RecipientsByAge: []int{1, 1, 0, 0, 0, 0, 0, 0}},
	}
	if !reflect.DeepEqual(sum.Domains, want) {
		t.Errorf("domains\n%+v, want\n%+v", sum.Domains, want)
	}
	total := DomainSummary{Domain: "TOTAL", Messages: 5, Recipients: 6, ByAge: []int{2, 2, 0, 0, 0, 0, 0, 1}, RecipientsByAge: []int{3, 2, 0, 0, 0, 0, 0, 1}}
	if !reflect.DeepEqual(sum.Total, total) {
		t.Errorf("total %+v, want %+v", sum.Total, total)
	}
}
