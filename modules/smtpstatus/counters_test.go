package smtpstatus

import (
	"encoding/json"
	"fmt"
	"path"
	"reflect"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/filestorage"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

var t0 = time.Date(2026, 12, 3, 10, 30, 0, 0, time.UTC)

// clock is a test clock that moves only when told.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBucketing(t *testing.T) {
	c := new(Counters)
	c.addDelivery(t0, "a.test", "delivered", "tls")
	c.addDelivery(t0.Add(29*time.Minute), "a.test", "deferred", "none")     // 10:59, same hour
	c.addDelivery(t0.Add(30*time.Minute), "b.test", "bounced", "plaintext") // 11:00, next hour
	c.addDelivery(t0.Add(14*time.Hour), "b.test", "delivered", "plaintext") // 00:30 on Dec 4
	c.addDelivery(t0, "local.test", "delivered", "local")
	c.addReceived(t0, "s.test", true)
	c.addReceived(t0, "", false)

	if len(c.Hours) != 3 || len(c.Days) != 2 {
		t.Fatalf("%d hour and %d day buckets, want 3 and 2", len(c.Hours), len(c.Days))
	}
	h := c.Hours[0]
	if h.Start != time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC).Unix() || h.Delivered != 2 || h.Deferred != 1 || h.Bounced != 0 {
		t.Errorf("10:00 bucket = %+v", h)
	}
	if h.Out != (TLSCount{TLS: 1}) {
		t.Errorf("10:00 outbound TLS = %+v, want one TLS (local and failed deliveries do not count)", h.Out)
	}
	if h.In != (TLSCount{TLS: 1, Plain: 1}) || h.InDomains != nil {
		t.Errorf("10:00 inbound = %+v, domains %v (hour buckets have no domains)", h.In, h.InDomains)
	}
	if c.Hours[1].Bounced != 1 || c.Hours[1].Out.total() != 0 {
		t.Errorf("11:00 bucket = %+v", c.Hours[1])
	}
	d := c.Days[0]
	if d.Start != time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).Unix() || d.Delivered != 2 || d.Deferred != 1 || d.Bounced != 1 {
		t.Errorf("Dec 3 bucket = %+v", d)
	}
	wantIn := map[string]*TLSCount{"s.test": {TLS: 1}, nullSender: {Plain: 1}}
	if !reflect.DeepEqual(d.InDomains, wantIn) {
		t.Errorf("Dec 3 inbound domains = %v, want %v", d.InDomains, wantIn)
	}
	if want := map[string]*TLSCount{"a.test": {TLS: 1}}; !reflect.DeepEqual(d.OutDomains, want) {
		t.Errorf("Dec 3 outbound domains = %v, want %v", d.OutDomains, want)
	}
	if c.Days[1].OutDomains["b.test"].Plain != 1 {
		t.Errorf("Dec 4 bucket = %+v", c.Days[1])
	}

	c.trim(t0.Add(47 * time.Hour)) // 09:30 on Dec 5: 10:00 on Dec 3 is the 48th hour
	if len(c.Hours) != 3 {
		t.Errorf("after 47h: %d hour buckets, want 3", len(c.Hours))
	}
	c.trim(t0.Add(48 * time.Hour)) // 10:30 on Dec 5: now it is the 49th
	if len(c.Hours) != 2 || len(c.Days) != 2 {
		t.Errorf("after 48h: %d hour buckets and %d day buckets, want 2 and 2", len(c.Hours), len(c.Days))
	}
	c.trim(t0.Add(dayBuckets * 24 * time.Hour)) // Dec 4 is the 40th day
	if len(c.Days) != 1 {
		t.Errorf("after %d days: %d day buckets, want 1", dayBuckets, len(c.Days))
	}
	c.trim(t0.Add((dayBuckets + 1) * 24 * time.Hour))
	if len(c.Hours) != 0 || len(c.Days) != 0 {
		t.Errorf("after %d days: %d hour and %d day buckets left", dayBuckets+1, len(c.Hours), len(c.Days))
	}
}

// TestBounding sends from many random domains: a day keeps at most
// maxDomains of them (plus "(other)"), the domains with most mail stay,
// and nothing is lost from the totals.
func TestBounding(t *testing.T) {
	c := new(Counters)
	for i := range 40 { // the partners: 40 domains with 20 messages each
		for range 20 {
			c.addReceived(t0, fmt.Sprintf("partner%d.test", i), i%2 == 0)
		}
	}
	for i := range 5000 { // a spammer: one message from each random domain
		c.addReceived(t0, fmt.Sprintf("rnd%d.spam.test", i), false)
	}
	day := c.Days[0]
	if n := len(day.InDomains); n > maxDomains+1 {
		t.Fatalf("%d domains in a day, want at most %d", n, maxDomains+1)
	}
	var sum TLSCount
	for _, n := range day.InDomains {
		sum.add(*n)
	}
	if want := (TLSCount{TLS: 400, Plain: 400 + 5000}); sum != want || day.In != want {
		t.Errorf("sum of domains %+v, total %+v, want %+v", sum, day.In, want)
	}
	for i := range 40 {
		if n := day.InDomains[fmt.Sprintf("partner%d.test", i)]; n == nil || n.total() != 20 {
			t.Errorf("partner%d.test = %v, want its 20 messages", i, n)
		}
	}
	if o := day.InDomains[otherDomain]; o == nil || o.Plain < 4990 {
		t.Errorf("(other) = %v", o)
	}
	raw, _ := json.Marshal(c)
	if len(raw) > 8000 {
		t.Errorf("one day of counters is %d bytes of JSON", len(raw))
	}

	// Keys that are no domain names cannot pose as (other) or <>.
	c = new(Counters)
	c.addReceived(t0, "(other)", true)
	c.addReceived(t0, "<>", true)
	if d := c.Days[0].InDomains; len(d) != 1 || d[otherDomain].TLS != 2 {
		t.Errorf("domains = %v", d)
	}
}

func TestMerge(t *testing.T) {
	a, b := new(Counters), new(Counters)
	a.addDelivery(t0, "x.test", "delivered", "tls")
	a.addReceived(t0, "", true)
	a.addDelivery(t0, "a-only.test", "delivered", "tls")
	b.addDelivery(t0, "x.test", "delivered", "plaintext")
	b.addDelivery(t0.Add(2*time.Hour), "y.test", "bounced", "tls")
	b.addReceived(t0, "", false)
	for i := range maxDomains - 1 { // b is full, merged with a it is over
		b.addDelivery(t0, fmt.Sprintf("d%d.test", i), "delivered", "tls")
	}
	a.merge(b)
	if len(a.Hours) != 2 || a.Hours[0].Delivered != 2+maxDomains || a.Hours[1].Bounced != 1 {
		t.Fatalf("hours after merge: %+v %+v", a.Hours[0], a.Hours[1])
	}
	day := a.Days[0]
	if day.Out != (TLSCount{TLS: 1 + maxDomains, Plain: 1}) || day.OutDomains[otherDomain] == nil {
		t.Errorf("outbound = %+v", day.Out)
	}
	if n := day.OutDomains["x.test"]; n == nil || *n != (TLSCount{TLS: 1, Plain: 1}) {
		t.Errorf("x.test = %v, want the two nodes' counts summed", n)
	}
	if n := day.InDomains[nullSender]; n == nil || *n != (TLSCount{TLS: 1, Plain: 1}) {
		t.Errorf("<> = %v", n)
	}
	if len(day.OutDomains) > maxDomains+1 {
		t.Errorf("%d domains after merge, want at most %d", len(day.OutDomains), maxDomains+1)
	}
	if day.OutDomains["x.test"] == nil {
		t.Error("x.test, the domain with most mail, was folded away")
	}
	// merge copies: changing b does not change a
	b.Hours[0].Delivered = 1000
	if a.Hours[0].Delivered == 1000 {
		t.Error("merge shares buckets")
	}
}

// fileStorage is a real Caddy file_system storage in a temp dir.
func fileStorage(t *testing.T) certmagic.Storage {
	t.Helper()
	fs := &filestorage.FileStorage{Root: t.TempDir()}
	s, err := fs.CertMagicStorage()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPersistence runs a collector on a file_system storage, stops it
// (the counters are written), starts another on the same key (they are
// read back), and merges a second node's counters from the same storage.
func TestPersistence(t *testing.T) {
	storage := fileStorage(t)
	clk := &clock{t0}
	key := path.Join(nodesPrefix, "node-a.json")
	c := newCollector(storage, key, zap.NewNop(), clk.now, time.Hour)
	c.MessageReceived("mx", "a@tls.test", true, 2)
	c.DeliveryResult("rcpt.test", "delivered", "tls")
	c.DeliveryResult("rcpt.test", "deferred", "none")
	if err := c.Destruct(); err != nil {
		t.Fatal(err)
	}
	want := c.counts.clone()

	clk.t = t0.Add(time.Hour)
	c = newCollector(storage, key, zap.NewNop(), clk.now, time.Hour)
	if !reflect.DeepEqual(c.counts, want) {
		got, _ := json.Marshal(c.counts)
		exp, _ := json.Marshal(want)
		t.Fatalf("after restart:\n%s\nwant\n%s", got, exp)
	}
	c.DeliveryResult("rcpt.test", "bounced", "plaintext")

	// node b shares the storage
	b := newCollector(storage, path.Join(nodesPrefix, "node-b.json"), zap.NewNop(), clk.now, time.Hour)
	b.MessageReceived("mx", "x@plain.test", false, 1)
	if err := b.Destruct(); err != nil {
		t.Fatal(err)
	}
	// a node whose counts have all aged out is deleted
	stale := path.Join(nodesPrefix, "gone.json")
	if err := storage.Store(t.Context(), stale, []byte(`{"days":[{"start":1000,"delivered":5}]}`)); err != nil {
		t.Fatal(err)
	}
	// a stored key that is not JSON is skipped
	if err := storage.Store(t.Context(), path.Join(nodesPrefix, "broken.json"), []byte("{")); err != nil {
		t.Fatal(err)
	}
	all, nodes, err := c.snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if nodes != 2 {
		t.Errorf("%d nodes, want 2", nodes)
	}
	if storage.Exists(t.Context(), stale) {
		t.Error("the aged-out node's key is still there")
	}
	day := all.Days[0]
	if day.Delivered != 1 || day.Deferred != 1 || day.Bounced != 1 || day.In != (TLSCount{TLS: 1, Plain: 1}) {
		t.Errorf("merged day = %+v", day)
	}
	if n := day.InDomains["plain.test"]; n == nil || n.Plain != 1 {
		t.Errorf("node b's domain: %v", n)
	}
	// the snapshot is a copy
	all.Days[0].Delivered = 99
	if c.counts.Days[0].Delivered != 1 {
		t.Error("snapshot shares the collector's counts")
	}
	if err := c.Destruct(); err != nil {
		t.Fatal(err)
	}
}

// TestFlushInterval: a collector writes its changed counters by itself.
func TestFlushInterval(t *testing.T) {
	storage := fileStorage(t)
	key := path.Join(nodesPrefix, "node.json")
	c := newCollector(storage, key, zap.NewNop(), time.Now, 10*time.Millisecond)
	defer c.Destruct()
	c.DeliveryResult("x.test", "delivered", "tls")
	testutil.Eventually(t, 5*time.Second, "the counters written by the flush loop", func() bool {
		got, err := loadCounters(storage, key)
		return err == nil && got != nil && len(got.Hours) == 1 && got.Hours[0].Delivered == 1
	})
}

// TestUnreadableCounters: when this node's stored counters cannot be
// read, the collector starts anyway, under a new key, and leaves the old
// value alone.
func TestUnreadableCounters(t *testing.T) {
	storage := fileStorage(t)
	key := path.Join(nodesPrefix, "node.json")
	if err := storage.Store(t.Context(), key, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	c := newCollector(storage, key, zap.NewNop(), (&clock{t0}).now, time.Hour)
	c.DeliveryResult("x.test", "delivered", "tls")
	if err := c.Destruct(); err != nil {
		t.Fatal(err)
	}
	if c.key == key {
		t.Fatal("the collector kept the unreadable key")
	}
	if raw, err := storage.Load(t.Context(), key); err != nil || string(raw) != "not json" {
		t.Errorf("the old value is now %q (%v)", raw, err)
	}
	if got, err := loadCounters(storage, c.key); err != nil || got == nil || got.Days[0].Delivered != 1 {
		t.Errorf("the new key holds %+v (%v)", got, err)
	}
}
