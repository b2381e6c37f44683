package bench_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
)

// BenchmarkQueueStore: the same 4 KiB load through one gateway node with
// the segment spool and with the PostgreSQL queue of a fleet (a private
// PostgreSQL 15 on loopback, fsync and synchronous_commit on), in one run:
// every message is committed (fsynced, or COMMITted) before its 250.
//
//	go test ./bench -run '^$' -bench BenchmarkQueueStore -benchtime 2000x -count 3
func BenchmarkQueueStore(b *testing.B) {
	e := gatewayEnv(b)
	pg := testpg.Start(b)
	for _, store := range []string{"segments", "postgres"} {
		b.Run("size=4096/store="+store, func(b *testing.B) {
			addr := e.gateway
			if store == "postgres" {
				addr = postgresGateway(b, e, pg.DSN())
				defer loadShared(b, e)
			}
			benchmarkLoad(b, e, addr, 4096, nil)
		})
	}
}

// postgresGateway loads a config whose gateway keeps its queue in
// PostgreSQL, and returns its address.
func postgresGateway(tb testing.TB, e *env, dsn string) string {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	addr := "127.0.0.1:" + port
	cfg := gatewayConfig(filepath.Join(e.dir, "pg"), addr, e.sink.Addr())
	smtp := cfg["apps"].(map[string]any)["smtp"].(map[string]any)
	smtp["queue"].(map[string]any)["store"] = map[string]any{"module": "postgres", "dsn": dsn, "node": "bench"}
	load(tb, cfg)
	return addr
}

// sharedConfig is the benchmarks' usual config: the plain gateway and the
// one with the checks.
func sharedConfig(e *env) map[string]any {
	cfg := gatewayConfig(e.dir, e.gateway, e.sink.Addr())
	servers(cfg)["checked"] = checksServer(e.checked, e.sink.Addr(), e.dns.addr())
	return cfg
}

func servers(cfg map[string]any) map[string]any {
	return cfg["apps"].(map[string]any)["smtp"].(map[string]any)["servers"].(map[string]any)
}

// loadShared loads the benchmarks' usual config again.
func loadShared(tb testing.TB, e *env) {
	tb.Helper()
	load(tb, sharedConfig(e))
}

func load(tb testing.TB, cfg map[string]any) {
	tb.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		tb.Fatalf("loading a config: %v", err)
	}
}

// TestQueueStoreSmoke: the PostgreSQL gateway of the benchmark takes and
// relays load, and the usual config comes back after it.
func TestQueueStoreSmoke(t *testing.T) {
	e := gatewayEnv(t)
	pg := testpg.Start(t)
	addr := postgresGateway(t, e, pg.DSN())
	if sum, _ := relayWith(t, e.sink, addr, 20, 4096, nil); sum.Accepted != 20 {
		t.Fatalf("%s", sum)
	}
	loadShared(t, e)
	if sum, _ := relayWith(t, e.sink, e.gateway, 5, 4096, nil); sum.Accepted != 5 {
		t.Fatalf("after the postgres gateway: %s", sum)
	}
}
