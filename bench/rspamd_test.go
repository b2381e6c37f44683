package bench_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// BenchmarkRspamd: the load through the plain server (rspamd=off) and
// through a server whose every message rspamd scans (rspamd=on: a real
// rspamd, started by the benchmark with the network modules off), in one
// run. cpu-ms/msg is this process (load tool, gateway, sink) as in the
// other benchmarks; rspamd-cpu-ms/msg is what rspamd's processes used,
// read from /proc, so the filter's cost is its own column.
//
//	go test ./bench -run '^$' -bench BenchmarkRspamd -benchtime 1000x -count 3
func BenchmarkRspamd(b *testing.B) {
	e := gatewayEnv(b)
	rs := testutil.StartRspamd(b)
	filtered := rspamdServer(b, e, rs.URL)
	for _, size := range []int{4096, 102400} {
		for _, mode := range []string{"off", "on"} {
			b.Run(fmt.Sprintf("size=%d/rspamd=%s", size, mode), func(b *testing.B) {
				addr := map[string]string{"off": e.gateway, "on": filtered}[mode]
				before := rs.CPU()
				benchmarkLoad(b, e, addr, size, nil)
				b.ReportMetric(float64((rs.CPU()-before).Microseconds())/1000/float64(b.N), "rspamd-cpu-ms/msg")
			})
		}
	}
}

// rspamdServer reloads the benchmark's config with one more server, the
// plain one's settings with the rspamd check (fail closed: a message that
// rspamd did not scan is not counted as scanned), and returns its address.
func rspamdServer(tb testing.TB, e *env, url string) string {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	addr := "127.0.0.1:" + port
	cfg := sharedConfig(e)
	srv := checksServer(addr, e.sink.Addr(), e.dns.addr())
	srv["checks"] = []any{map[string]any{"check": "rspamd", "url": url, "fail_open": false}}
	servers(cfg)["rspamd"] = srv
	load(tb, cfg)
	return addr
}

// TestRspamdSmoke: the rspamd server takes the load, and rspamd scanned
// the messages (X-Spam-Score on what the sink got) with processes whose
// CPU is measured.
func TestRspamdSmoke(t *testing.T) {
	e := gatewayEnv(t)
	rs := testutil.StartRspamd(t)
	addr := rspamdServer(t, e, rs.URL)
	before := rs.CPU()
	sum, _ := relayWith(t, e.sink, addr, 20, 4096, nil)
	if sum.Accepted != 20 {
		t.Fatalf("%s", sum)
	}
	if last := e.sink.Last(); !strings.Contains(last, "X-Spam-Score: ") {
		t.Errorf("the relayed message has no sign of rspamd's scan:\n%.600s", last)
	}
	if rs.CPU() <= before {
		t.Errorf("rspamd used no CPU for 20 messages (%v then %v): its processes are not measured", before, rs.CPU())
	}
}
