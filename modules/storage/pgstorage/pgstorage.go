// Package pgstorage is Caddy storage in PostgreSQL: the Caddy module
// caddy.storage.postgres. Every node of a fleet that points at the same
// database shares its certificates, ACME account, locks and whatever else
// the modules keep in Caddy storage (MTA-STS cache, TLS-RPT records, DKIM
// keys, lists, quarantine settings).
package pgstorage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/internal/pgdb"
)

func init() {
	caddy.RegisterModule(Storage{})
}

// Storage keeps Caddy's storage in two tables of a PostgreSQL database,
// created on first use (certmagic_data for the keys, certmagic_locks for
// the locks; their version is in schema_version). Keys behave like the
// file_system storage's paths: "a/b" makes "a" a directory that Exists,
// Stat and List see, and deleting "a" deletes everything under it.
//
// A lock is a row with its holder and an expiry, renewed while it is
// held: a node that dies holding a lock blocks the others for at most
// lock_expiry, then the lock is taken over.
//
//	storage postgres {
//		dsn {env.PG_DSN}
//		lock_expiry 1m
//	}
type Storage struct {
	// The PostgreSQL connection string, as a URL
	// (`postgres://user:password@host:5432/db?sslmode=verify-full`) or
	// in key=value form. Placeholders such as `{env.PG_DSN}` are
	// replaced, so that a password need not be in the config. The
	// connection pool can be sized in it (`pool_max_conns=8`). It is
	// never logged. Required.
	DSN string `json:"dsn,omitempty"`

	// How long a lock outlives a holder that stopped renewing it (a dead
	// node); holders renew it every third of this time.
	// Default: 1m
	LockExpiry caddy.Duration `json:"lock_expiry,omitempty"`

	db     *pgdb.DB
	where  string // host and database, for String and errors
	logger *zap.Logger
	holder string // this instance, in the locks table

	held *heldLocks
}

// heldLocks are the locks this instance holds, by name.
type heldLocks struct {
	sync.Mutex
	m map[string]*heldLock
}

// heldLock is a lock this instance holds and renews.
type heldLock struct {
	token string
	stop  chan struct{}
	done  chan struct{}
}

// CaddyModule returns the Caddy module information.
func (Storage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.storage.postgres",
		New: func() caddy.Module { return new(Storage) },
	}
}

// Provision opens (or joins) the connection pool. It does not connect:
// the tables are created by the first storage operation.
func (s *Storage) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	dsn := caddy.NewReplacer().ReplaceKnown(s.DSN, "")
	if strings.TrimSpace(dsn) == "" {
		return errors.New("storage postgres: dsn is required")
	}
	if s.LockExpiry == 0 {
		s.LockExpiry = caddy.Duration(time.Minute)
	}
	if s.LockExpiry < caddy.Duration(time.Second) {
		return fmt.Errorf("storage postgres: lock_expiry %s: must be at least 1s", time.Duration(s.LockExpiry))
	}
	cfg, err := pgdb.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("storage postgres: dsn: %w", err)
	}
	s.where = fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	if s.db, err = pgdb.Open(dsn); err != nil {
		return fmt.Errorf("storage postgres: %w", err)
	}
	host, _ := os.Hostname()
	s.holder = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), randomHex())
	s.held = &heldLocks{m: map[string]*heldLock{}}
	return nil
}

// Cleanup stops renewing this instance's locks and gives up its use of
// the pool.
func (s *Storage) Cleanup() error {
	if s.held == nil {
		return nil
	}
	s.held.Lock()
	held := s.held.m
	s.held.m = map[string]*heldLock{}
	s.held.Unlock()
	for _, h := range held {
		close(h.stop)
		<-h.done
	}
	if s.db == nil {
		return nil
	}
	return s.db.Close()
}

// CertMagicStorage implements caddy.StorageConverter.
func (s *Storage) CertMagicStorage() (certmagic.Storage, error) { return s, nil }

// String names the database (never the password).
func (s *Storage) String() string { return "postgres:" + s.where }

// UnmarshalCaddyfile sets up the storage from Caddyfile tokens:
//
//	storage postgres {
//		dsn <connection string>
//		lock_expiry <duration>
//	}
func (s *Storage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("storage postgres: duplicate option '%s'", opt)
		}
		seen[opt] = true
		var val string
		if !d.Args(&val) || d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "dsn":
			s.DSN = val
		case "lock_expiry":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("storage postgres: lock_expiry '%s': %v", val, err)
			}
			s.LockExpiry = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized storage postgres option '%s'", opt)
		}
	}
	return nil
}

// schema is the storage's migrations; append, never edit.
var schema = []string{
	`CREATE TABLE certmagic_data (
		key text COLLATE "C" PRIMARY KEY,
		value bytea NOT NULL,
		modified timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE certmagic_locks (
		name text PRIMARY KEY,
		holder text NOT NULL,
		expires timestamptz NOT NULL
	)`,
}

func (s *Storage) ready(ctx context.Context) error {
	if err := s.db.Ensure(ctx, "certmagic", schema); err != nil {
		return fmt.Errorf("storage postgres %s: %w", s.where, err)
	}
	return nil
}

// normalize makes a key a clean relative path ("" is the root), as the
// file_system storage's filepath.Join would.
func normalize(key string) string {
	return strings.TrimPrefix(path.Clean("/"+key), "/")
}

// below returns the key range of everything under key: [lo, hi), with
// hi "" meaning no upper bound (the root). '0' follows '/' in byte order,
// the order of the key column's "C" collation.
func below(key string) (lo, hi string) {
	if key == "" {
		return "", ""
	}
	return key + "/", key + "0"
}

// inRange is the SQL condition that a key lies in the range of
// parameters $n and $n+1 (from below).
func inRange(n int) string {
	return fmt.Sprintf("key >= $%d AND ($%d = '' OR key < $%d)", n, n+1, n+1)
}

func notExist(key string) error { return fmt.Errorf("%w: %s", fs.ErrNotExist, key) }

// Store puts value at key, replacing what was there.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	key = normalize(key)
	if key == "" {
		return errors.New("storage postgres: empty key")
	}
	if value == nil {
		value = []byte{}
	}
	_, err := s.db.Pool.Exec(ctx, `INSERT INTO certmagic_data (key, value, modified) VALUES ($1, $2, now())
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, modified = EXCLUDED.modified`, key, value)
	return err
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	var v []byte
	err := s.db.Pool.QueryRow(ctx, "SELECT value FROM certmagic_data WHERE key = $1", normalize(key)).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notExist(key)
	}
	return v, err
}

// Delete removes key and everything under it; a key that does not exist
// is no error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	key = normalize(key)
	lo, hi := below(key)
	_, err := s.db.Pool.Exec(ctx, "DELETE FROM certmagic_data WHERE key = $1 OR ("+inRange(2)+")", key, lo, hi)
	return err
}

// Exists reports whether key is a stored value or has values under it.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	if s.ready(ctx) != nil {
		return false
	}
	key = normalize(key)
	lo, hi := below(key)
	var ok bool
	err := s.db.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM certmagic_data WHERE key = $1 OR ("+inRange(2)+"))",
		key, lo, hi).Scan(&ok)
	return err == nil && ok
}

// Stat describes key: a stored value (terminal, with size and time of
// the last Store) or a directory (the newest time below it).
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if err := s.ready(ctx); err != nil {
		return certmagic.KeyInfo{}, err
	}
	nkey := normalize(key)
	info := certmagic.KeyInfo{Key: key}
	err := s.db.Pool.QueryRow(ctx, "SELECT octet_length(value), modified FROM certmagic_data WHERE key = $1",
		nkey).Scan(&info.Size, &info.Modified)
	if err == nil {
		info.IsTerminal = true
		return info, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return info, err
	}
	lo, hi := below(nkey)
	var newest *time.Time
	if err := s.db.Pool.QueryRow(ctx, "SELECT max(modified) FROM certmagic_data WHERE "+inRange(1),
		lo, hi).Scan(&newest); err != nil {
		return info, err
	}
	if newest == nil {
		return info, notExist(key)
	}
	info.Modified = *newest
	return info, nil
}

// List returns the keys under prefix: its children, or with recursive
// every key and directory below it, as prefix-joined paths in byte
// order. A prefix that does not exist is an error wrapping
// fs.ErrNotExist; a stored value has no keys under it.
func (s *Storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	nprefix := normalize(prefix)
	lo, hi := below(nprefix)
	rows, err := s.db.Pool.Query(ctx, "SELECT key FROM certmagic_data WHERE key = $1 OR ("+inRange(2)+")",
		nprefix, lo, hi)
	if err != nil {
		return nil, err
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, notExist(prefix)
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if k == nprefix {
			continue // the prefix itself is a value
		}
		parts := strings.Split(strings.TrimPrefix(k, lo), "/")
		if !recursive {
			parts = parts[:1]
		}
		for i := range parts {
			seen[path.Join(prefix, strings.Join(parts[:i+1], "/"))] = true
		}
	}
	var list []string // nil when empty, as file_system's
	for k := range seen {
		list = append(list, k)
	}
	sort.Strings(list)
	return list, nil
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Interface guards
var (
	_ caddy.Module           = (*Storage)(nil)
	_ caddy.Provisioner      = (*Storage)(nil)
	_ caddy.CleanerUpper     = (*Storage)(nil)
	_ caddy.StorageConverter = (*Storage)(nil)
	_ caddyfile.Unmarshaler  = (*Storage)(nil)
	_ certmagic.Storage      = (*Storage)(nil)
	_ certmagic.TryLocker    = (*Storage)(nil)
)
