package testpg_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
)

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v string
	if err := c.QueryRow(ctx, sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// The server is durable (fsync, synchronous_commit), runs as a user other
// than root, and keeps its data over a restart on the same address.
func TestServer(t *testing.T) {
	s := testpg.Start(t)
	for setting, want := range map[string]string{"fsync": "on", "synchronous_commit": "on", "listen_addresses": "127.0.0.1"} {
		if got := query(t, s.DSN(), "SHOW "+setting); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	if u := query(t, s.DSN(), "SELECT current_setting('data_directory')"); u == "" {
		t.Error("no data directory")
	}
	dsn := s.CreateDatabase(t, "kept")
	s.Exec(t, "SELECT 1")
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('survives')"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)

	s.Stop(t)
	if _, err := pgx.Connect(ctx, dsn); err == nil {
		t.Fatal("connected to a stopped server")
	}
	s.Restart(t)
	if got := query(t, dsn, "SELECT v FROM t"); got != "survives" {
		t.Fatalf("after restart: %q", got)
	}
}
