package pgstorage_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// Two holders (two instances, as two nodes have) exclude each other;
// Lock honours its context; only the holder may unlock.
func TestLockTwoHolders(t *testing.T) {
	srv := testpg.Start(t)
	a, b := open(t, srv.DSN(), time.Minute), open(t, srv.DSN(), time.Minute)
	ctx := context.Background()
	if err := a.Lock(ctx, "issue_cert_mx.example"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_mx.example"); ok || err != nil {
		t.Fatalf("second holder TryLock = %v, %v", ok, err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := b.Lock(short, "issue_cert_mx.example"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with an ending context: %v", err)
	}
	if err := b.Unlock(ctx, "issue_cert_mx.example"); err == nil {
		t.Fatal("a node that does not hold the lock released it")
	}
	if ok, _ := b.TryLock(ctx, "issue_cert_other.example"); !ok {
		t.Fatal("another name is not locked")
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue_cert_mx.example") }()
	if err := a.Unlock(ctx, "issue_cert_mx.example"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting holder after Unlock: %v", err)
	}
	if err := b.Unlock(ctx, "issue_cert_mx.example"); err != nil {
		t.Fatal(err)
	}
}

// Concurrent read-modify-write under the lock, from two nodes, loses no
// update.
func TestLockExcludes(t *testing.T) {
	srv := testpg.Start(t)
	nodes := []interface {
		Lock(context.Context, string) error
		Unlock(context.Context, string) error
		Load(context.Context, string) ([]byte, error)
		Store(context.Context, string, []byte) error
	}{open(t, srv.DSN(), 5*time.Second), open(t, srv.DSN(), 5*time.Second)}
	ctx := context.Background()
	const perWorker, workers = 10, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		n := nodes[w%2]
		wg.Go(func() {
			for range perWorker {
				if err := n.Lock(ctx, "counter"); err != nil {
					errs <- err
					return
				}
				v, _ := n.Load(ctx, "counter")
				c, _ := strconv.Atoi(string(v))
				if err := n.Store(ctx, "counter", []byte(strconv.Itoa(c+1))); err != nil {
					errs <- err
				}
				if err := n.Unlock(ctx, "counter"); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	v, _ := nodes[0].Load(ctx, "counter")
	if string(v) != strconv.Itoa(workers*perWorker) {
		t.Fatalf("counter = %s, want %d", v, workers*perWorker)
	}
}

// lockExpires is when the lock's row says it expires, in the database's
// clock, and whether that time has passed.
func lockExpires(t *testing.T, srv *testpg.Server, name string) (time.Time, bool) {
	t.Helper()
	var at time.Time
	var passed bool
	srv.QueryRow(t, "SELECT expires, expires <= now() FROM certmagic_locks WHERE name = $1", []any{name}, &at, &passed)
	return at, passed
}

// A live holder renews its lock, so it outlasts lock_expiry; a dead
// holder's lock is taken over once it expires, and the dead holder's
// late Unlock fails instead of releasing the new holder's lock.
func TestLockExpiry(t *testing.T) {
	srv := testpg.Start(t)
	const expiry = time.Second
	a, b := open(t, srv.DSN(), expiry), open(t, srv.DSN(), expiry)
	ctx := context.Background()
	if err := a.Lock(ctx, "renewed"); err != nil {
		t.Fatal(err)
	}
	first, _ := lockExpires(t, srv, "renewed")
	// Wait, in the database's clock, until the first expiry has passed.
	testutil.Eventually(t, 10*expiry, "the first expiry to pass", func() bool {
		var passed bool
		srv.QueryRow(t, "SELECT $1::timestamptz < now()", []any{first}, &passed)
		return passed
	})
	if ok, err := b.TryLock(ctx, "renewed"); ok || err != nil {
		t.Fatalf("a renewed lock was taken over: %v, %v", ok, err)
	}
	if now, _ := lockExpires(t, srv, "renewed"); !now.After(first) {
		t.Fatalf("expiry not renewed: %v, first %v", now, first)
	}
	if err := a.Unlock(ctx, "renewed"); err != nil {
		t.Fatal(err)
	}

	// A holder that died: its row stays, nobody renews it.
	srv.Exec(t, "INSERT INTO certmagic_locks (name, holder, expires) VALUES ('orphan', 'dead-node', now() + interval '1 second')")
	if ok, _ := b.TryLock(ctx, "orphan"); ok {
		t.Fatal("took a lock before it expired")
	}
	wait, cancel := context.WithTimeout(ctx, 20*expiry)
	defer cancel()
	if err := b.Lock(wait, "orphan"); err != nil {
		t.Fatalf("stale lock not taken over: %v", err)
	}
	if _, passed := lockExpires(t, srv, "orphan"); passed {
		t.Fatal("the taken-over lock has no new expiry")
	}

	// Our own lock lost (taken over while we could not renew): Unlock
	// reports it and leaves the other holder's row alone.
	srv.Exec(t, "UPDATE certmagic_locks SET holder = 'other-node' WHERE name = 'orphan'")
	if err := b.Unlock(ctx, "orphan"); err == nil {
		t.Fatal("Unlock of a lost lock succeeded")
	}
	var holder string
	srv.QueryRow(t, "SELECT holder FROM certmagic_locks WHERE name = 'orphan'", nil, &holder)
	if holder != "other-node" {
		t.Fatalf("the other holder's lock was released (holder %q)", holder)
	}
}
