package pgstorage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// TryLock takes the lock name if nobody holds it or its holder stopped
// renewing it for lock_expiry; it reports whether it did. The lock is
// renewed until Unlock.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	token := s.holder + "/" + randomHex()
	tag, err := s.db.Pool.Exec(ctx, `INSERT INTO certmagic_locks (name, holder, expires)
		VALUES ($1, $2, now() + $3 * interval '1 millisecond')
		ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires
		WHERE certmagic_locks.expires <= now()`, name, token, s.expiry().Milliseconds())
	if err != nil {
		return false, fmt.Errorf("storage postgres: lock %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	h := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.held.Lock()
	s.held.m[name] = h
	s.held.Unlock()
	go s.renew(name, h)
	return true, nil
}

// Lock waits until it holds the lock name (see TryLock) or ctx ends.
func (s *Storage) Lock(ctx context.Context, name string) error {
	poll := min(s.expiry()/10, time.Second)
	for {
		ok, err := s.TryLock(ctx, name)
		if ok || err != nil {
			return err
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Unlock releases a lock this instance holds. It fails if the lock was
// lost meanwhile (not renewed in time and taken over).
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.held.Lock()
	h := s.held.m[name]
	delete(s.held.m, name)
	s.held.Unlock()
	if h == nil {
		return fmt.Errorf("storage postgres: unlock %q: not held here", name)
	}
	close(h.stop)
	<-h.done
	tag, err := s.db.Pool.Exec(ctx, "DELETE FROM certmagic_locks WHERE name = $1 AND holder = $2", name, h.token)
	if err != nil {
		return fmt.Errorf("storage postgres: unlock %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("storage postgres: unlock %q: %w", name, errLost)
	}
	return nil
}

var errLost = errors.New("the lock expired and was taken over")

func (s *Storage) expiry() time.Duration { return time.Duration(s.LockExpiry) }

// renew extends a held lock every third of lock_expiry until it is
// released; a lock found taken over is given up (logged).
func (s *Storage) renew(name string, h *heldLock) {
	defer close(h.done)
	tick := time.NewTicker(s.expiry() / 3)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.expiry()/3)
		tag, err := s.db.Pool.Exec(ctx, `UPDATE certmagic_locks SET expires = now() + $3 * interval '1 millisecond'
			WHERE name = $1 AND holder = $2`, name, h.token, s.expiry().Milliseconds())
		cancel()
		switch {
		case err != nil:
			s.logger.Warn("renewing a storage lock", zap.String("lock", name), zap.Error(err))
		case tag.RowsAffected() == 0:
			s.logger.Error("storage lock lost", zap.String("lock", name), zap.Error(errLost))
			return
		}
	}
}
