package pgstorage_test

import (
	"context"
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
	"github.com/caddy-smtp/caddy-smtp/modules/storage/pgstorage"
)

// open provisions a storage instance on dsn, as Caddy would; it is
// cleaned up when the test ends.
func open(t *testing.T, dsn string, expiry time.Duration) *pgstorage.Storage {
	t.Helper()
	s := &pgstorage.Storage{DSN: dsn, LockExpiry: caddy.Duration(expiry)}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := s.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Cleanup(); err != nil {
			t.Error(err)
		}
		cancel()
	})
	return s
}

// pair is the storage under test and certmagic's file storage, which
// defines the semantics it models; every operation runs on both.
type pair struct {
	t    *testing.T
	pg   certmagic.Storage
	file certmagic.Storage
}

func newPair(t *testing.T, dsn string) *pair {
	return &pair{t: t, pg: open(t, dsn, time.Minute), file: &certmagic.FileStorage{Path: t.TempDir()}}
}

func (p *pair) store(key, value string) {
	p.t.Helper()
	for _, s := range []certmagic.Storage{p.pg, p.file} {
		if err := s.Store(context.Background(), key, []byte(value)); err != nil {
			p.t.Fatalf("%s: Store(%q): %v", s, key, err)
		}
	}
}

// same runs op on both storages and fails when the results differ.
func (p *pair) same(what string, op func(certmagic.Storage) any) any {
	p.t.Helper()
	got, want := op(p.pg), op(p.file)
	if !reflect.DeepEqual(got, want) {
		p.t.Errorf("%s: postgres %#v, file_system %#v", what, got, want)
	}
	return got
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

var tree = map[string]string{
	"acme/ca/users/u@example.test/u.json": "account",
	"acme/ca/users/u@example.test/u.key":  "account key",
	"certificates/ca/mx.example/mx.crt":   "cert",
	"certificates/ca/mx.example/mx.key":   "key",
	"certificates/ca/mx.example/mx.json":  "",
	"certificates/ca/other.example/o.crt": "cert 2",
	"certificates.bak/x":                  "sorts before certificates/ in bytes",
	"certificatesx/y":                     "shares a prefix, not a directory",
	"mta-sts/example.test":                "policy",
}

// The behaviour of keys, directories and List matches certmagic's
// file_system storage, operation by operation.
func TestLikeFileStorage(t *testing.T) {
	srv := testpg.Start(t)
	p := newPair(t, srv.DSN())
	ctx := context.Background()
	for k, v := range tree {
		p.store(k, v)
	}
	for k, v := range tree {
		got := p.same("Load "+k, func(s certmagic.Storage) any {
			b, err := s.Load(ctx, k)
			return [2]any{string(b), err}
		})
		if got.([2]any)[0] != v {
			t.Errorf("Load(%q) = %q, want %q", k, got.([2]any)[0], v)
		}
	}
	for _, k := range []string{"acme", "certificates", "certificates/ca/mx.example", "certificates/ca/mx.example/mx.crt",
		"nothing", "certificates/c", "certificatesx", "/certificates//ca/", ""} {
		p.same("Exists "+k, func(s certmagic.Storage) any { return s.Exists(ctx, k) })
		for _, rec := range []bool{false, true} {
			p.same("List "+k, func(s certmagic.Storage) any {
				l, err := s.List(ctx, k, rec)
				sortStrings(l)
				if err != nil {
					return isNotExist(err)
				}
				return l
			})
		}
		p.same("Stat "+k, func(s certmagic.Storage) any {
			i, err := s.Stat(ctx, k)
			if err != nil {
				return isNotExist(err)
			}
			return [3]any{i.Key, i.IsTerminal, i.IsTerminal && i.Size == int64(len(tree[k]))}
		})
	}
	if _, err := p.pg.Load(ctx, "nothing"); !isNotExist(err) {
		t.Errorf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	if _, err := p.pg.Load(ctx, "certificates"); err == nil {
		t.Error("Load of a directory succeeded")
	}
	l, _ := p.pg.List(ctx, "certificates/ca", true)
	want := []string{"certificates/ca/mx.example", "certificates/ca/mx.example/mx.crt", "certificates/ca/mx.example/mx.json",
		"certificates/ca/mx.example/mx.key", "certificates/ca/other.example", "certificates/ca/other.example/o.crt"}
	if !reflect.DeepEqual(l, want) {
		t.Errorf("List recursive = %q, want %q", l, want)
	}

	// Overwrite, then delete a directory (recursively), a value, and
	// something that is not there.
	p.store("mta-sts/example.test", "policy 2")
	p.same("Load after overwrite", func(s certmagic.Storage) any { b, _ := s.Load(ctx, "mta-sts/example.test"); return string(b) })
	for _, k := range []string{"certificates/ca/mx.example", "acme/ca/users/u@example.test/u.key", "nothing/here"} {
		p.same("Delete "+k, func(s certmagic.Storage) any { return s.Delete(ctx, k) })
	}
	for _, k := range []string{"certificates/ca/mx.example/mx.crt", "certificates/ca/mx.example", "certificates", "acme/ca/users/u@example.test/u.json", "acme/ca/users/u@example.test/u.key"} {
		p.same("Exists after Delete "+k, func(s certmagic.Storage) any { return s.Exists(ctx, k) })
	}
	if p.pg.Exists(ctx, "certificates/ca/mx.example/mx.key") {
		t.Error("a key under a deleted directory is still there")
	}
	if !p.pg.Exists(ctx, "certificatesx/y") || !p.pg.Exists(ctx, "certificates.bak/x") {
		t.Error("deleting a directory took keys that only share its prefix")
	}
}

func sortStrings(l []string) {
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j] < l[j-1]; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}

// Stat reports the size and time of the last Store, and the newest time
// below a directory.
func TestStat(t *testing.T) {
	srv := testpg.Start(t)
	s := open(t, srv.DSN(), time.Minute)
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	if err := s.Store(ctx, "d/a", []byte("12345")); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "d/sub/b", nil); err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(time.Second)
	i, err := s.Stat(ctx, "d/a")
	if err != nil || !i.IsTerminal || i.Size != 5 || i.Key != "d/a" {
		t.Fatalf("Stat(d/a) = %+v, %v", i, err)
	}
	if i.Modified.Before(before) || i.Modified.After(after) {
		t.Errorf("Modified %v not between %v and %v", i.Modified, before, after)
	}
	d, err := s.Stat(ctx, "d")
	if err != nil || d.IsTerminal || d.Modified.Before(i.Modified) {
		t.Fatalf("Stat(d) = %+v, %v", d, err)
	}
	if b, err := s.Stat(ctx, "d/sub/b"); err != nil || !b.IsTerminal || b.Size != 0 {
		t.Fatalf("Stat of an empty value = %+v, %v", b, err)
	}
	if _, err := s.Stat(ctx, "d/none"); !isNotExist(err) {
		t.Fatalf("Stat of a missing key: %v", err)
	}
}

// The connection string may come from the environment; the tables are
// created on first use under schema version 1, once.
func TestEnvDSNAndSchema(t *testing.T) {
	srv := testpg.Start(t)
	t.Setenv("PG_DSN_TEST", srv.DSN())
	a := open(t, "{env.PG_DSN_TEST}", time.Minute)
	if a.String() != "postgres:127.0.0.1:"+strings.TrimPrefix(srv.Addr(), "127.0.0.1:")+"/postgres" {
		t.Errorf("String() = %q", a.String())
	}
	ctx := context.Background()
	if err := a.Store(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	b := open(t, srv.DSN()+"&application_name=b", time.Minute)
	if v, err := b.Load(ctx, "k"); err != nil || string(v) != "v" {
		t.Fatalf("second instance: %q, %v", v, err)
	}
	assertVersion(t, srv, 1)
	srv.Exec(t, "UPDATE schema_version SET version = 99 WHERE component = 'certmagic'")
	c := open(t, srv.DSN()+"&application_name=c", time.Minute)
	if err := c.Store(ctx, "k", []byte("v")); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a newer schema was not refused: %v", err)
	}
}

func assertVersion(t *testing.T, srv *testpg.Server, want int) {
	t.Helper()
	var n int
	srv.QueryRow(t, "SELECT count(*) FROM schema_version WHERE component = 'certmagic' AND version = $1", []any{want}, &n)
	if n != 1 {
		t.Fatalf("schema_version has no certmagic row at version %d", want)
	}
}

// Config errors say where and never show the connection string.
func TestConfigErrors(t *testing.T) {
	for dsn, want := range map[string]string{
		"":                                      "storage postgres: dsn is required",
		"postgres://u:s3cret@127.0.0.1:99999/x": "storage postgres: dsn: invalid connection string",
		"host=127.0.0.1 password=s3cret port=nope": "storage postgres: dsn: invalid connection string",
	} {
		s := &pgstorage.Storage{DSN: dsn}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := s.Provision(ctx)
		cancel()
		if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("dsn %q: error %v, want %q without the password", dsn, err, want)
		}
	}
	s := &pgstorage.Storage{DSN: "postgres://127.0.0.1/x", LockExpiry: caddy.Duration(time.Millisecond)}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := s.Provision(ctx); err == nil || !strings.Contains(err.Error(), "lock_expiry") {
		t.Errorf("lock_expiry 1ms: %v", err)
	}
}
