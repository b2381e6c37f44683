package queuetest

import (
	"errors"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// OpenSpaceFunc opens a store in dir that keeps minFree bytes free.
type OpenSpaceFunc func(dir string, minFree int64) (queue.Store, error)

// RunSpaceTests checks a store that manages its free space
// (queue.SpaceWatcher): while it is short of space it refuses new messages
// with queue.ErrInsufficientStorage, but removing a message still works
// and is durable, so a delivered message does not come back on reopening.
func RunSpaceTests(t *testing.T, open OpenSpaceFunc) {
	dir := t.TempDir()
	roomy := func(dir string) (queue.Store, error) { return open(dir, 1) }
	full := func(dir string) (queue.Store, error) { return open(dir, 1<<62) }

	s := Open(t, roomy, dir)
	if s.(queue.SpaceWatcher).StorageLow() {
		t.Fatal("storage low with a reserve of one byte")
	}
	Commit(t, s, "AAAAAAAAAAAAAAAA", BodyFor("a", 50000), "a@example.test")
	Commit(t, s, "BBBBBBBBBBBBBBBB", BodyFor("b", 50000), "b@example.test")
	s.Close()

	s = Open(t, full, dir)
	if !s.(queue.SpaceWatcher).StorageLow() {
		t.Fatal("storage not low with a reserve larger than the disk")
	}
	if w, err := s.Create("CCCCCCCCCCCCCCCC"); !errors.Is(err, queue.ErrInsufficientStorage) {
		if err == nil {
			_, _ = w.Write([]byte("x"))
			err = w.Commit(&queue.Message{From: "s@sender.test"})
		}
		if !errors.Is(err, queue.ErrInsufficientStorage) {
			t.Fatalf("new message while short of space: %v, want ErrInsufficientStorage", err)
		}
	}
	msgs := Load(t, s)
	if len(msgs) != 2 {
		t.Fatalf("%d messages loaded, want 2", len(msgs))
	}
	if err := s.Remove("AAAAAAAAAAAAAAAA"); err != nil {
		t.Fatalf("removing a delivered message while short of space: %v", err)
	}
	if got := string(Body(t, s, "BBBBBBBBBBBBBBBB")); got != string(BodyFor("b", 50000)) {
		t.Fatal("body of the remaining message changed")
	}
	s.Close()

	s = Open(t, roomy, dir)
	defer s.Close()
	msgs = Load(t, s)
	if len(msgs) != 1 || msgs["BBBBBBBBBBBBBBBB"] == nil {
		t.Fatalf("after reopening: %v, want only BBBBBBBBBBBBBBBB (the removed message came back)", msgs)
	}
	Commit(t, s, "DDDDDDDDDDDDDDDD", BodyFor("d", 1000), "d@example.test")
}
