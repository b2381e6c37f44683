package queue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

// The queue's own tests run the scenarios on memStore; the real stores
// (modules/smtpstores/...) run them on disk.
func TestMemStore(t *testing.T) { queuetest.RunStoreTests(t, openMem) }
func TestQueue(t *testing.T)    { queuetest.RunQueueTests(t, openMem) }

// memStore keeps a spool in memory. Spools live in a map by directory, so
// a store opened again sees what was committed before; one store per
// directory is open at a time. Envelopes are kept as JSON, so the queue's
// messages are never shared with the store, as with the real stores.
type memStore struct{ sp *memSpool }

type memSpool struct {
	mu     sync.Mutex
	open   bool
	envs   map[string][]byte
	bodies map[string][]byte
	held   []string
}

var memSpools = struct {
	sync.Mutex
	m map[string]*memSpool
}{m: make(map[string]*memSpool)}

func openMem(dir string) (queue.Store, error) {
	memSpools.Lock()
	defer memSpools.Unlock()
	sp := memSpools.m[dir]
	if sp == nil {
		sp = &memSpool{envs: make(map[string][]byte), bodies: make(map[string][]byte)}
		memSpools.m[dir] = sp
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.open {
		return nil, fmt.Errorf("spool %s is in use", dir)
	}
	sp.open = true
	return &memStore{sp: sp}, nil
}

func (s *memStore) Create(id string) (queue.BodyWriter, error) {
	if !queue.ValidID(id) {
		return nil, fmt.Errorf("invalid message id %q", id)
	}
	return &memBody{s: s, id: id}, nil
}

type memBody struct {
	s    *memStore
	id   string
	buf  bytes.Buffer
	done bool
}

func (b *memBody) Write(p []byte) (int, error) { return b.buf.Write(p) }
func (b *memBody) Abort()                      { b.done = true }

func (b *memBody) Commit(m *queue.Message) error {
	if b.done {
		return errors.New("body already committed or aborted")
	}
	b.done = true
	m.ID, m.Size = b.id, int64(b.buf.Len())
	env, err := json.Marshal(m)
	if err != nil {
		return err
	}
	sp := b.s.sp
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.envs[b.id], sp.bodies[b.id] = env, b.buf.Bytes()
	return nil
}

func (s *memStore) Load() ([]*queue.Message, error) {
	s.sp.mu.Lock()
	defer s.sp.mu.Unlock()
	var msgs []*queue.Message
	for _, env := range s.sp.envs {
		m := new(queue.Message)
		if err := json.Unmarshal(env, m); err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func (s *memStore) Save(m *queue.Message) error {
	env, err := json.Marshal(m)
	if err != nil {
		return err
	}
	s.sp.mu.Lock()
	defer s.sp.mu.Unlock()
	if _, ok := s.sp.envs[m.ID]; !ok {
		return fmt.Errorf("message %s: %w", m.ID, os.ErrNotExist)
	}
	s.sp.envs[m.ID] = env
	return nil
}

func (s *memStore) Remove(id string) error {
	s.sp.mu.Lock()
	defer s.sp.mu.Unlock()
	delete(s.sp.envs, id)
	delete(s.sp.bodies, id)
	return nil
}

func (s *memStore) OpenBody(id string) (io.ReadCloser, error) {
	s.sp.mu.Lock()
	defer s.sp.mu.Unlock()
	b, ok := s.sp.bodies[id]
	if !ok {
		return nil, fmt.Errorf("message %s: %w", id, os.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *memStore) Close() error {
	s.sp.mu.Lock()
	defer s.sp.mu.Unlock()
	s.sp.open = false
	return nil
}

func (s *memStore) LoadHeldDomains() ([]string, error) {
	s.sp.mu.Lock()
	defer s.sp.mu.Unlock()
	return append([]string(nil), s.sp.held...), nil
}

func (s *memStore) SaveHeldDomains(domains []string) error {
	s.sp.mu.Lock()
	defer s.sp.mu.Unlock()
	s.sp.held = append([]string{}, domains...)
	return nil
}

// Interface guards
var (
	_ queue.Store           = (*memStore)(nil)
	_ queue.DomainHoldStore = (*memStore)(nil)
)

// TestFleetSnapshotsNotShared: a store of one node has no fleet view.
func TestFleetSnapshotsNotShared(t *testing.T) {
	st, err := openMem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close(context.Background())
	if _, err := q.FleetSnapshots(); !errors.Is(err, queue.ErrNotShared) {
		t.Errorf("FleetSnapshots: %v, want ErrNotShared", err)
	}
}

// TestCommitThenBeforeScheduling: CommitThen's callback runs once the
// message is stored and before the queue knows it (so before any
// delivery): what the session logs there comes first.
func TestCommitThenBeforeScheduling(t *testing.T) {
	st, err := openMem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close(context.Background())
	id := queue.NewID()
	w, err := q.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
	called := false
	err = q.CommitThen(w, &queue.Message{From: "a@sender.test", Recipients: []*queue.Recipient{{Addr: "b@example.test"}}}, func() {
		called = true
		if _, err := q.Snapshot(id); err == nil {
			t.Error("the queue already had the message when the callback ran")
		}
	})
	if err != nil || !called {
		t.Fatalf("CommitThen: %v, callback called %v", err, called)
	}
	if _, err := q.Snapshot(id); err != nil {
		t.Errorf("after CommitThen: %v", err)
	}
}
