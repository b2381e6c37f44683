// Package pgdb is what the PostgreSQL-backed modules (caddy.storage.postgres,
// smtp.queue.stores.postgres) share: one connection pool per connection
// string in the process, kept over config reloads, and versioned schema
// migrations.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var pools = caddy.NewUsagePool()

// DB is a connection pool shared by every module instance that uses the
// same connection string. Close it once per Open.
type DB struct {
	Pool *pgxpool.Pool
	key  string

	mu       sync.Mutex
	migrated map[string]bool
}

// Destruct implements caddy.Destructor: the pool closes with its last user.
func (d *DB) Destruct() error {
	d.Pool.Close()
	return nil
}

// ParseDSN checks a connection string. Its error never contains the
// string (it may hold a password).
func ParseDSN(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		var pe *pgconn.ParseConfigError
		if errors.As(err, &pe) && errors.Unwrap(pe) != nil {
			err = errors.Unwrap(pe)
		}
		return nil, fmt.Errorf("invalid connection string: %w", err)
	}
	return cfg, nil
}

// Open returns the process's pool for dsn, creating it on first use. No
// connection is made until the pool is used.
func Open(dsn string) (*DB, error) {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	v, _, err := pools.LoadOrNew(dsn, func() (caddy.Destructor, error) {
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			return nil, err
		}
		return &DB{Pool: pool, key: dsn, migrated: map[string]bool{}}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*DB), nil
}

// Close gives up one use of the pool.
func (d *DB) Close() error {
	_, err := pools.Delete(d.key)
	return err
}

// Ensure applies component's migrations once per process (and waits for
// another node doing it at the same time); after an error the next call
// tries again.
func (d *DB) Ensure(ctx context.Context, component string, steps []string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.migrated[component] {
		return nil
	}
	if err := Migrate(ctx, d.Pool, component, steps); err != nil {
		return fmt.Errorf("creating the %s tables: %w", component, err)
	}
	d.migrated[component] = true
	return nil
}
