package queue

// Selecting messages by sender, recipient, domain, age and state (the
// filters of `caddy smtp queue ... --all`), the per-domain summary by age
// (like Postfix's qshape) and requeueing (like `postsuper -r`).

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Filter selects queued messages. Every field that is set must match. A
// quarantined message matches only with Quarantined set.
type Filter struct {
	// From is the envelope sender: an address, "@domain" for every sender
	// in a domain, or "<>" for the null sender. Case-insensitive.
	From string
	// To is a pending recipient, written like From (no "<>").
	To string
	// Domain is the domain of a pending recipient.
	Domain string
	// OlderThan selects messages that arrived longer ago than this.
	OlderThan time.Duration
	// Held selects messages held by an administrator; with Quarantined
	// too, held or quarantined ones.
	Held bool
	// Quarantined selects messages that a check quarantined.
	Quarantined bool
}

// Match reports whether the snapshot of a message passes the filter.
func (f Filter) Match(s Snapshot, now time.Time) bool {
	quarantined := s.State == StateQuarantine
	switch {
	case quarantined && !f.Quarantined,
		(f.Held || f.Quarantined) && !(f.Held && s.State == StateHeld || f.Quarantined && quarantined),
		f.OlderThan > 0 && now.Sub(s.Arrived) <= f.OlderThan,
		f.From != "" && !matchAddr(f.From, s.From):
		return false
	}
	if f.To == "" && f.Domain == "" {
		return true
	}
	for _, r := range s.Recipients {
		if r.Status == "pending" && (f.To == "" || matchAddr(f.To, r.Addr)) &&
			(f.Domain == "" || strings.EqualFold(strings.TrimSuffix(strings.TrimPrefix(f.Domain, "@"), "."), Domain(r.Addr))) {
			return true
		}
	}
	return false
}

// matchAddr matches an address against a From or To filter.
func matchAddr(pattern, addr string) bool {
	switch {
	case pattern == "<>":
		return addr == ""
	case strings.HasPrefix(pattern, "@"):
		return addr != "" && strings.EqualFold(pattern[1:], Domain(addr))
	}
	return strings.EqualFold(pattern, addr)
}

// Select describes the queued messages that pass the filter, oldest first.
func (q *Queue) Select(f Filter) []Snapshot {
	now := time.Now()
	all := q.Snapshots()
	out := all[:0]
	for _, s := range all {
		if f.Match(s, now) {
			out = append(out, s)
		}
	}
	return out
}

// AgeBuckets are the upper bounds of the age columns of a Summary; the
// last column has no bound.
var AgeBuckets = []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute,
	40 * time.Minute, 80 * time.Minute, 160 * time.Minute, 320 * time.Minute}

// Summary counts queued messages per recipient domain and age, like
// Postfix's qshape.
type Summary struct {
	// Buckets names the age columns: "0-5m", "5-10m", ... "320m+".
	Buckets []string `json:"buckets"`
	// Total counts every message (and its pending recipients) once.
	Total DomainSummary `json:"total"`
	// Domains has a row per domain of a pending recipient, most
	// messages first; a message counts once in each of its domains.
	Domains []DomainSummary `json:"domains"`
}

// DomainSummary is a row of a Summary.
type DomainSummary struct {
	Domain string `json:"domain"`
	// Messages and Recipients are the totals; ByAge has the messages
	// (RecipientsByAge the pending recipients) per age column.
	Messages        int   `json:"messages"`
	Recipients      int   `json:"recipients"`
	ByAge           []int `json:"by_age"`
	RecipientsByAge []int `json:"recipients_by_age"`
}

func (d *DomainSummary) add(col, rcpts int) {
	d.Messages++
	d.Recipients += rcpts
	d.ByAge[col]++
	d.RecipientsByAge[col] += rcpts
}

// Summarize counts the messages given by their snapshots (see Select)
// per domain of their pending recipients and per age at now.
func Summarize(msgs []Snapshot, now time.Time) Summary {
	var sum Summary
	prev := 0
	for _, b := range AgeBuckets {
		sum.Buckets = append(sum.Buckets, fmt.Sprintf("%d-%dm", prev, int(b.Minutes())))
		prev = int(b.Minutes())
	}
	sum.Buckets = append(sum.Buckets, fmt.Sprintf("%dm+", prev))
	row := func(domain string) DomainSummary {
		return DomainSummary{Domain: domain, ByAge: make([]int, len(sum.Buckets)), RecipientsByAge: make([]int, len(sum.Buckets))}
	}
	sum.Total = row("TOTAL")
	rows := make(map[string]*DomainSummary)
	for _, s := range msgs {
		age := now.Sub(s.Arrived)
		col := sort.Search(len(AgeBuckets), func(i int) bool { return age < AgeBuckets[i] })
		perDomain := make(map[string]int)
		var order []string
		for _, r := range s.Recipients {
			if r.Status != "pending" {
				continue
			}
			d := Domain(r.Addr)
			if perDomain[d] == 0 {
				order = append(order, d)
			}
			perDomain[d]++
		}
		total := 0
		for _, d := range order {
			if rows[d] == nil {
				r := row(d)
				rows[d] = &r
			}
			rows[d].add(col, perDomain[d])
			total += perDomain[d]
		}
		sum.Total.add(col, total)
	}
	sum.Domains = make([]DomainSummary, 0, len(rows))
	for _, r := range rows {
		sum.Domains = append(sum.Domains, *r)
	}
	sort.Slice(sum.Domains, func(i, j int) bool {
		a, b := sum.Domains[i], sum.Domains[j]
		if a.Messages != b.Messages {
			return a.Messages > b.Messages
		}
		return a.Domain < b.Domain
	})
	return sum
}

// Requeue gives a message a fresh delivery attempt now, its pending
// recipients routed again by the config in force (like Postfix's
// `postsuper -r`, after a change of routes or targets). The retry backoff
// starts over: if the attempt fails, the next ones are timed as for a new
// message, from the requeue. The message keeps its arrival time, so its
// maximum age and delay warnings are unchanged. A round that is running
// is waited for (as long as ctx allows; then ErrBusy). A held message, or
// one whose pending recipients are all in held domains, is not requeued
// (ErrHeld).
func (q *Queue) Requeue(ctx context.Context, id string) error {
	e, err := q.claim(ctx, id)
	if err != nil {
		return err
	}
	m := e.msg
	q.mu.Lock()
	switch {
	case m.Held:
		err = fmt.Errorf("%w: %s: release it first", ErrHeld, id)
	case q.onlyHeldDomains(e):
		err = fmt.Errorf("%w: %s: every pending recipient is in a held domain", ErrHeld, id)
	}
	was, wasNext := m.Requeued, m.NextAttempt
	now := time.Now()
	if err == nil {
		m.Requeued, m.NextAttempt = now, now
	}
	q.mu.Unlock()
	if err != nil {
		q.unclaim(e, e.due)
		return err
	}
	if err := q.store.Save(m); err != nil {
		q.mu.Lock()
		m.Requeued, m.NextAttempt = was, wasNext
		q.mu.Unlock()
		q.unclaim(e, e.due)
		return fmt.Errorf("saving message %s: %w", id, err)
	}
	q.unclaim(e, now)
	q.log().Info("message requeued", zap.String("msg_id", id))
	return nil
}

// retryStart is when the retry backoff of a message starts: its arrival
// or its last requeue.
func (m *Message) retryStart() time.Time {
	if m.Requeued.After(m.Arrived) {
		return m.Requeued
	}
	return m.Arrived
}
