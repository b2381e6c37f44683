// Package queuetest holds the tests every queue.Store should pass, for the
// packages that implement one: RunStoreTests checks the store on its own
// (commit, load, save, remove, lock, held domains) and RunQueueTests runs
// the queue's delivery and administration scenarios on it. It also exports
// the small helpers those tests use, for a store's own tests.
package queuetest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// OpenFunc opens (creating if needed) the store kept in directory dir, as
// the store's Open function does: a second open of a dir that is open
// fails, an open after Close sees what was committed before.
type OpenFunc func(dir string) (queue.Store, error)

// RunQueueTests runs the queue scenarios (delivery, retries, DSNs,
// connection reuse, restart, holds, flush, delete, quarantine retention) on queues whose store
// open makes, one subtest each.
func RunQueueTests(t *testing.T, open OpenFunc) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, OpenFunc)
	}{
		{"DeliverAndRemove", testDeliverAndRemove},
		{"TemporaryFailureIsRetried", testTemporaryFailureIsRetried},
		{"PermanentFailureBouncesPartialResult", testPermanentFailureBouncesPartialResult},
		{"REQUIRETLSBounce", testREQUIRETLSBounce},
		{"NoBounceForNullSenderOrNotifyNever", testNoBounceForNullSenderOrNotifyNever},
		{"SuccessDSNWhenAsked", testSuccessDSNWhenAsked},
		{"ExpiryBounces", testExpiryBounces},
		{"ConnectionReuseAndPerDestinationLimit", testConnectionReuseAndPerDestinationLimit},
		{"RestartPicksUpSpool", testRestartPicksUpSpool},
		{"DeadReusedSessionRetriesAtOnce", testDeadReusedSessionRetriesAtOnce},
		{"HoldStopsDeliveryAcrossRestartAndReleaseDelivers", testHoldStopsDeliveryAcrossRestartAndReleaseDelivers},
		{"HoldWaitsForRunningDelivery", testHoldWaitsForRunningDelivery},
		{"HoldDomainPersistsAcrossRestart", testHoldDomainPersistsAcrossRestart},
		{"FlushMakesDeferredMessageDue", testFlushMakesDeferredMessageDue},
		{"Requeue", testRequeue},
		{"DeleteRemovesFromStore", testDeleteRemovesFromStore},
		{"DeleteWithBounceQueuesDSN", testDeleteWithBounceQueuesDSN},
		{"ReadHeaderAndBody", testReadHeaderAndBody},
		{"QuarantineRetention", testQuarantineRetention},
		{"QuarantineRetentionTimer", testQuarantineRetentionTimer},
		{"QuarantineRetentionReload", testQuarantineRetentionReload},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// RunStoreTests checks the Store contract on the stores open makes, one
// subtest each. The held-domains test runs when the store implements
// queue.DomainHoldStore.
func RunStoreTests(t *testing.T, open OpenFunc) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, OpenFunc)
	}{
		{"RoundTrip", testStoreRoundTrip},
		{"InvalidID", testStoreInvalidID},
		{"SaveAndRemove", testStoreSaveAndRemove},
		{"ConcurrentCommits", testStoreConcurrentCommits},
		{"Lock", testStoreLock},
		{"HeldDomains", testStoreHeldDomains},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// Open calls open and fails the test on an error.
func Open(t *testing.T, open OpenFunc, dir string) queue.Store {
	t.Helper()
	s, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Commit stores message id with body (written in several writes, as the
// SMTP server does), sender s@sender.test and the given recipients.
func Commit(t *testing.T, s queue.Store, id string, body []byte, rcpts ...string) {
	t.Helper()
	w, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	for len(body) > 0 {
		n := min(len(body), 1000)
		if _, err := w.Write(body[:n]); err != nil {
			t.Fatal(err)
		}
		body = body[n:]
	}
	m := &queue.Message{From: "s@sender.test", Arrived: time.Now()}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, &queue.Recipient{Addr: r})
	}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
}

// Body returns the stored body of message id.
func Body(t *testing.T, s queue.Store, id string) []byte {
	t.Helper()
	r, err := s.OpenBody(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Load returns the store's messages by ID.
func Load(t *testing.T, s queue.Store) map[string]*queue.Message {
	t.Helper()
	msgs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*queue.Message)
	for _, m := range msgs {
		out[m.ID] = m
	}
	return out
}

// BodyFor returns a body of n bytes that names id on every line.
func BodyFor(id string, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, "%s line %d\r\n", id, b.Len())
	}
	return b.Bytes()[:n]
}

func testStoreRoundTrip(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	s := Open(t, open, dir)
	bodies := map[string][]byte{"SMALL": BodyFor("SMALL", 300), "EMPTY": nil, "BIG": BodyFor("BIG", 100_000)}
	for id, b := range bodies {
		Commit(t, s, id, b, "a@example.test")
	}
	w, err := s.Create("ABORTED")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(BodyFor("x", 10000))
	w.Abort()
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("files left in tmp/: %v", left)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = Open(t, open, dir)
	defer s.Close()
	got := Load(t, s)
	if len(got) != len(bodies) {
		t.Fatalf("loaded %d messages", len(got))
	}
	for id, b := range bodies {
		m := got[id]
		if m == nil || m.Size != int64(len(b)) || m.From != "s@sender.test" || len(m.Recipients) != 1 {
			t.Fatalf("%s: %+v", id, m)
		}
		if rb := Body(t, s, id); !bytes.Equal(rb, b) {
			t.Fatalf("%s: body of %d bytes differs (%d)", id, len(b), len(rb))
		}
	}
}

func testStoreInvalidID(t *testing.T, open OpenFunc) {
	s := Open(t, open, t.TempDir())
	defer s.Close()
	for _, id := range []string{"", "../x", "a/b", "a.b"} {
		if w, err := s.Create(id); err == nil {
			w.Abort()
			t.Errorf("Create(%q) succeeded", id)
		}
	}
}

func testStoreSaveAndRemove(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	s := Open(t, open, dir)
	Commit(t, s, "KEEP", BodyFor("KEEP", 500), "a@example.test", "b@example.test")
	Commit(t, s, "GONE", BodyFor("GONE", 500), "c@example.test")
	m := Load(t, s)["KEEP"]
	m.Attempts = 3
	m.Recipients[0].Status = queue.Delivered
	m.Held = true
	if err := s.Save(m); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("GONE"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("GONE"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := s.OpenBody("GONE"); err == nil {
		t.Fatal("body of a removed message opens")
	}
	s.Close()
	s = Open(t, open, dir)
	defer s.Close()
	got := Load(t, s)
	if len(got) != 1 || got["GONE"] != nil {
		t.Fatalf("loaded %v", got)
	}
	k := got["KEEP"]
	if k.Attempts != 3 || !k.Held || k.Recipients[0].Status != queue.Delivered || k.Recipients[1].Status != queue.Pending {
		t.Fatalf("saved state lost: %+v", k)
	}
	if !bytes.Equal(Body(t, s, "KEEP"), BodyFor("KEEP", 500)) {
		t.Fatal("body differs after save")
	}
}

func testStoreConcurrentCommits(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	s := Open(t, open, dir)
	var wg sync.WaitGroup
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				id := fmt.Sprintf("G%02dM%02d", g, i)
				Commit(t, s, id, BodyFor(id, 1000+g*100), "a@example.test")
				if i%2 == 1 {
					if err := s.Remove(id); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	s.Close()
	s = Open(t, open, dir)
	defer s.Close()
	got := Load(t, s)
	if len(got) != 100 {
		t.Fatalf("loaded %d, want 100", len(got))
	}
	for id := range got {
		var g, i int
		fmt.Sscanf(id, "G%02dM%02d", &g, &i)
		if i%2 == 1 || !bytes.Equal(Body(t, s, id), BodyFor(id, 1000+g*100)) {
			t.Fatalf("%s: removed, or its body differs", id)
		}
	}
}

func testStoreLock(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	s := Open(t, open, dir)
	if s2, err := open(dir); err == nil {
		s2.Close()
		t.Fatal("a second open of a spool in use succeeded")
	}
	s.Close()
	Open(t, open, dir).Close()
}

func testStoreHeldDomains(t *testing.T, open OpenFunc) {
	dir := t.TempDir()
	s := Open(t, open, dir)
	hs, ok := s.(queue.DomainHoldStore)
	if !ok {
		s.Close()
		t.Skip("the store does not keep held domains")
	}
	if d, err := hs.LoadHeldDomains(); err != nil || d != nil {
		t.Fatalf("none saved: %v %v", d, err)
	}
	if err := hs.SaveHeldDomains([]string{"example.test"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = Open(t, open, dir)
	defer s.Close()
	if d, err := s.(queue.DomainHoldStore).LoadHeldDomains(); err != nil || !reflect.DeepEqual(d, []string{"example.test"}) {
		t.Fatalf("after reopening: %v %v", d, err)
	}
}
