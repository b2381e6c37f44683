package smtpstatus

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Bounds of the counters, so that their size in storage stays small
// whatever the traffic: a spammer who sends from random domains moves
// small domains into "(other)" instead of adding keys.
const (
	hourBuckets = 48 // hour buckets kept (the page shows 24)
	dayBuckets  = 40 // day buckets kept (the page shows 30)
	// maxDomains is the most domains a day bucket keeps per direction.
	// When a new domain would exceed it, the smaller half is folded into
	// otherDomain: the domains with most mail stay (approximate top-N).
	maxDomains = 50
)

// Domain keys that are no domain names (a domain has no parentheses or
// angle brackets).
const (
	otherDomain = "(other)" // the domains folded away
	nullSender  = "<>"      // mail from the null sender (DSNs)
)

// Counters are one node's counts in time buckets: the smtp/status/ value
// of that node in storage (JSON).
type Counters struct {
	// Hours and Days are buckets sorted by start, oldest first.
	Hours []*Bucket `json:"hours"`
	Days  []*Bucket `json:"days"`
}

// Bucket holds the counts of one hour or one day (UTC).
type Bucket struct {
	// Start is the beginning of the bucket in Unix seconds.
	Start int64 `json:"start"`
	// Delivered, Deferred and Bounced count recipients' delivery attempts
	// by result.
	Delivered int64 `json:"delivered,omitempty"`
	Deferred  int64 `json:"deferred,omitempty"`
	Bounced   int64 `json:"bounced,omitempty"`
	// In counts received messages by the TLS of the client's session; Out
	// counts recipients delivered over the network by the TLS of the
	// delivery (local deliveries are not in it).
	In  TLSCount `json:"in"`
	Out TLSCount `json:"out"`
	// InDomains and OutDomains split In by sending domain (MAIL FROM)
	// and Out by recipient domain; day buckets only, at most maxDomains
	// each plus otherDomain.
	InDomains  map[string]*TLSCount `json:"in_domains,omitempty"`
	OutDomains map[string]*TLSCount `json:"out_domains,omitempty"`
}

// TLSCount counts mail with and without TLS.
type TLSCount struct {
	TLS   int64 `json:"tls"`
	Plain int64 `json:"plaintext"`
}

func (c *TLSCount) add(o TLSCount) { c.TLS += o.TLS; c.Plain += o.Plain }

func (c TLSCount) total() int64 { return c.TLS + c.Plain }

func tlsCount(tls bool) TLSCount {
	if tls {
		return TLSCount{TLS: 1}
	}
	return TLSCount{Plain: 1}
}

// bucket returns the bucket that starts at start, adding it in order.
func bucket(list *[]*Bucket, start int64) *Bucket {
	i, found := slices.BinarySearchFunc(*list, start, func(b *Bucket, t int64) int { return cmp.Compare(b.Start, t) })
	if !found {
		*list = slices.Insert(*list, i, &Bucket{Start: start})
	}
	return (*list)[i]
}

// hourStart and dayStart are the starts of the buckets holding t.
func hourStart(t time.Time) int64 { return t.UTC().Truncate(time.Hour).Unix() }
func dayStart(t time.Time) int64 {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix()
}

// addReceived counts a message received at t from a sender in domain.
func (c *Counters) addReceived(t time.Time, domain string, tls bool) {
	n := tlsCount(tls)
	bucket(&c.Hours, hourStart(t)).In.add(n)
	day := bucket(&c.Days, dayStart(t))
	day.In.add(n)
	day.InDomains = addDomain(day.InDomains, domain, n)
}

// addDelivery counts a recipient's delivery attempt at t. Only deliveries
// over the network count in the TLS share.
func (c *Counters) addDelivery(t time.Time, domain, result, transport string) {
	for _, b := range []*Bucket{bucket(&c.Hours, hourStart(t)), bucket(&c.Days, dayStart(t))} {
		switch result {
		case "delivered":
			b.Delivered++
		case "deferred":
			b.Deferred++
		case "bounced":
			b.Bounced++
		}
	}
	if result != "delivered" || transport != "tls" && transport != "plaintext" {
		return
	}
	n := tlsCount(transport == "tls")
	bucket(&c.Hours, hourStart(t)).Out.add(n)
	day := bucket(&c.Days, dayStart(t))
	day.Out.add(n)
	day.OutDomains = addDomain(day.OutDomains, domain, n)
}

// domainKey is the key a sender's or recipient's domain is counted
// under.
func domainKey(d string) string {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	switch {
	case d == "":
		return nullSender
	case len(d) > 253 || strings.ContainsAny(d, "()<>"):
		return otherDomain
	}
	return d
}

// addDomain adds n to domain's count in m, keeping m within maxDomains:
// a new domain that finds m full first folds the domains with the least
// mail into otherDomain.
func addDomain(m map[string]*TLSCount, domain string, n TLSCount) map[string]*TLSCount {
	if m == nil {
		m = make(map[string]*TLSCount)
	}
	key := domainKey(domain)
	if _, ok := m[key]; !ok && key != otherDomain && len(m)-hasOther(m) >= maxDomains {
		foldSmallest(m)
	}
	if m[key] == nil {
		m[key] = new(TLSCount)
	}
	m[key].add(n)
	return m
}

func hasOther(m map[string]*TLSCount) int {
	if _, ok := m[otherDomain]; ok {
		return 1
	}
	return 0
}

// foldSmallest adds the domains with the smallest count in m to
// otherDomain: all of them when they tie (a flood of one-message
// domains goes at once).
func foldSmallest(m map[string]*TLSCount) {
	least := int64(-1)
	for d, n := range m {
		if d != otherDomain && (least < 0 || n.total() < least) {
			least = n.total()
		}
	}
	for d, n := range m {
		if d != otherDomain && n.total() == least {
			foldInto(m, d)
		}
	}
}

// fold keeps the keep domains with most mail in m and adds the others to
// otherDomain. Ties go to the name, so that the result does not depend on
// map order.
func fold(m map[string]*TLSCount, keep int) {
	names := make([]string, 0, len(m))
	for d := range m {
		if d != otherDomain {
			names = append(names, d)
		}
	}
	if len(names) <= keep {
		return
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b].total(), m[a].total()), strings.Compare(a, b))
	})
	for _, d := range names[keep:] {
		foldInto(m, d)
	}
}

// foldInto moves domain d's count in m to otherDomain.
func foldInto(m map[string]*TLSCount, d string) {
	other := m[otherDomain]
	if other == nil {
		other = new(TLSCount)
		m[otherDomain] = other
	}
	other.add(*m[d])
	delete(m, d)
}

// merge adds the counts of o to c (another node's, or what storage held
// before a restart).
func (c *Counters) merge(o *Counters) {
	if o == nil {
		return
	}
	mergeBuckets(&c.Hours, o.Hours)
	mergeBuckets(&c.Days, o.Days)
}

func mergeBuckets(into *[]*Bucket, from []*Bucket) {
	for _, ob := range from {
		if ob == nil {
			continue
		}
		b := bucket(into, ob.Start)
		b.Delivered += ob.Delivered
		b.Deferred += ob.Deferred
		b.Bounced += ob.Bounced
		b.In.add(ob.In)
		b.Out.add(ob.Out)
		b.InDomains = mergeDomains(b.InDomains, ob.InDomains)
		b.OutDomains = mergeDomains(b.OutDomains, ob.OutDomains)
	}
}

func mergeDomains(into, from map[string]*TLSCount) map[string]*TLSCount {
	if len(from) == 0 {
		return into
	}
	if into == nil {
		into = make(map[string]*TLSCount, len(from))
	}
	for d, n := range from {
		if n == nil {
			continue
		}
		key := d
		if d != otherDomain && d != nullSender {
			key = domainKey(d)
		}
		if into[key] == nil {
			into[key] = new(TLSCount)
		}
		into[key].add(*n)
	}
	if len(into)-hasOther(into) > maxDomains {
		fold(into, maxDomains)
	}
	return into
}

// trim drops the buckets that have aged out at now.
func (c *Counters) trim(now time.Time) {
	c.Hours = dropBefore(c.Hours, hourStart(now)-(hourBuckets-1)*3600)
	c.Days = dropBefore(c.Days, dayStart(now)-(dayBuckets-1)*86400)
}

func dropBefore(list []*Bucket, start int64) []*Bucket {
	i := 0
	for i < len(list) && list[i].Start < start {
		i++
	}
	return list[i:]
}

// clone returns a deep copy of c.
func (c *Counters) clone() *Counters {
	out := new(Counters)
	out.merge(c)
	return out
}
