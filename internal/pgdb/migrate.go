package pgdb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Migrate brings component's tables up to len(steps): step i (0-based)
// is schema version i+1 and runs, with its version record, in one
// transaction. Nodes that migrate at once wait for each other on an
// advisory lock, so every step runs exactly once. A database that has a
// newer version than the code knows is refused.
func Migrate(ctx context.Context, pool *pgxpool.Pool, component string, steps []string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// One lock for all components: the version table itself is
		// created under it.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(7243019)"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			component text PRIMARY KEY,
			version integer NOT NULL,
			updated timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var have int
		err := tx.QueryRow(ctx, "SELECT version FROM schema_version WHERE component = $1", component).Scan(&have)
		if err != nil && err != pgx.ErrNoRows {
			return err
		}
		if have > len(steps) {
			return fmt.Errorf("schema of %s is version %d, newer than this build knows (%d)", component, have, len(steps))
		}
		for v := have + 1; v <= len(steps); v++ {
			if _, err := tx.Exec(ctx, steps[v-1]); err != nil {
				return fmt.Errorf("%s schema version %d: %w", component, v, err)
			}
		}
		if have == len(steps) {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO schema_version (component, version) VALUES ($1, $2)
			ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, updated = now()`, component, len(steps))
		return err
	})
}

// Version returns the recorded schema version of component (0: none).
func Version(ctx context.Context, pool *pgxpool.Pool, component string) (int, error) {
	var v int
	err := pool.QueryRow(ctx, "SELECT version FROM schema_version WHERE component = $1", component).Scan(&v)
	if err == pgx.ErrNoRows {
		return 0, nil
	}
	return v, err
}
