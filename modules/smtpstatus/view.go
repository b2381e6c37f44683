package smtpstatus

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// How much of the counters the page shows.
const (
	shownHours = 24
	shownDays  = 30
)

// Status is what the page shows, and the body of `?format=json`.
type Status struct {
	Generated time.Time `json:"generated"`
	// Nodes is the number of nodes whose counters are included (this one
	// and those that share its storage).
	Nodes int `json:"nodes"`
	// Queue is this node's queue; null without a running smtp app.
	Queue *QueueStatus `json:"queue"`
	// Hours are the last 24 hours and Days the last 30 days, oldest
	// first, the current hour and day last (still counting).
	Hours []Point `json:"hours"`
	Days  []Point `json:"days"`
	// Totals24h and Totals30d sum Hours and Days.
	Totals24h Point `json:"totals_24h"`
	Totals30d Point `json:"totals_30d"`
	// Inbound and Outbound are the TLS shares over the 30 days by sending
	// domain and by recipient domain, the most plaintext first.
	Inbound  []DomainShare `json:"inbound"`
	Outbound []DomainShare `json:"outbound"`
}

// QueueStatus is the size of the queue and the age of its oldest message.
type QueueStatus struct {
	Messages      int        `json:"messages"`
	Oldest        *time.Time `json:"oldest,omitempty"`
	OldestSeconds int64      `json:"oldest_age_seconds"`
}

// Point is the counts of one bucket (or a sum of buckets).
type Point struct {
	Start     time.Time `json:"start"`
	Delivered int64     `json:"delivered"`
	Deferred  int64     `json:"deferred"`
	Bounced   int64     `json:"bounced"`
	In        TLSCount  `json:"in"`
	Out       TLSCount  `json:"out"`
}

func (p *Point) add(b *Bucket) {
	p.Delivered += b.Delivered
	p.Deferred += b.Deferred
	p.Bounced += b.Bounced
	p.In.add(b.In)
	p.Out.add(b.Out)
}

// DomainShare is the TLS share of one domain's mail.
type DomainShare struct {
	Domain string `json:"domain"`
	TLSCount
	// Percent is the share of the domain's mail that used TLS.
	Percent float64 `json:"tls_percent"`
}

// percent returns the TLS share of n in percent (0 when n is empty).
func (c TLSCount) percent() float64 {
	if c.total() == 0 {
		return 0
	}
	return 100 * float64(c.TLS) / float64(c.total())
}

// newStatus builds the page's data from counters at now.
func newStatus(c *Counters, now time.Time) *Status {
	s := &Status{Generated: now.UTC()}
	s.Hours = series(c.Hours, hourStart(now), shownHours, func(t time.Time, i int) time.Time { return t.Add(time.Duration(i) * time.Hour) })
	s.Days = series(c.Days, dayStart(now), shownDays, func(t time.Time, i int) time.Time { return t.AddDate(0, 0, i) })
	for _, b := range dropBefore(c.Hours, s.Hours[0].Start.Unix()) {
		s.Totals24h.add(b)
	}
	in, out := map[string]*TLSCount{}, map[string]*TLSCount{}
	for _, b := range dropBefore(c.Days, s.Days[0].Start.Unix()) {
		s.Totals30d.add(b)
		in = mergeDomains(in, b.InDomains)
		out = mergeDomains(out, b.OutDomains)
	}
	s.Inbound, s.Outbound = shares(in), shares(out)
	return s
}

// series returns n points ending with the bucket that starts at last.
func series(list []*Bucket, last int64, n int, step func(time.Time, int) time.Time) []Point {
	end := time.Unix(last, 0).UTC()
	points := make([]Point, n)
	byStart := make(map[int64]*Bucket, len(list))
	for _, b := range list {
		byStart[b.Start] = b
	}
	for i := range points {
		points[i].Start = step(end, i-n+1)
		if b := byStart[points[i].Start.Unix()]; b != nil {
			points[i].add(b)
		}
	}
	return points
}

// shares lists the domains of m, the most plaintext mail first.
func shares(m map[string]*TLSCount) []DomainShare {
	out := make([]DomainShare, 0, len(m))
	for d, n := range m {
		out = append(out, DomainShare{Domain: d, TLSCount: *n, Percent: n.percent()})
	}
	slices.SortFunc(out, func(a, b DomainShare) int {
		return cmp.Or(cmp.Compare(b.Plain, a.Plain), cmp.Compare(b.total(), a.total()), strings.Compare(a.Domain, b.Domain))
	})
	return out
}
