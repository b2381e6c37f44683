// Package bench_test holds the in-process benchmark of the relay path:
// smtpload -> caddy-smtp (STARTTLS, fsynced queue) -> relay with
// opportunistic STARTTLS -> smtpsink, all in this test process. The
// comparison with Postfix, with the relay in its own process, is run.sh.
//
//	go test ./bench/ -run '^$' -bench GatewayRelay -benchtime 3000x -cpuprofile cpu.out
package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddypki"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"

	_ "github.com/caddy-smtp/caddy-smtp"
	"github.com/caddy-smtp/caddy-smtp/bench/smtpload"
	"github.com/caddy-smtp/caddy-smtp/bench/smtpsink"
)

// env is one sink and one gateway relaying to it, shared by the tests and
// benchmarks of this package (Caddy runs one config per process) and
// stopped by TestMain.
type env struct {
	sink    *smtpsink.Sink
	gateway string // the plain server
	checked string // the server with the authentication checks
	dns     *checksDNS
	sign    func([]byte) ([]byte, error)
	dir     string
}

var (
	shared     *env
	sharedErr  error
	sharedOnce sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		_ = caddy.Stop()
		shared.sink.Close()
		_ = shared.dns.srv.Shutdown()
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// gatewayEnv starts (once) the sink and the gateway and checks that a
// message passes through both TLS hops.
func gatewayEnv(tb testing.TB) *env {
	tb.Helper()
	sharedOnce.Do(func() { shared, sharedErr = startEnv() })
	if sharedErr != nil {
		tb.Fatal(sharedErr)
	}
	return shared
}

func startEnv() (*env, error) {
	dir, err := os.MkdirTemp("", "smtpbench-")
	if err != nil {
		return nil, err
	}
	sink, err := smtpsink.Start(smtpsink.Config{})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	pub, key := newLoadKey()
	dnsSrv, err := startChecksDNS(pub)
	if err != nil {
		sink.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	e := &env{sink: sink, dir: dir, dns: dnsSrv, sign: loadSigner(key)}
	fail := func(err error) (*env, error) {
		sink.Close()
		_ = dnsSrv.srv.Shutdown()
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	e.gateway = "127.0.0.1:" + port
	port, err = freePort()
	if err != nil {
		return fail(err)
	}
	e.checked = "127.0.0.1:" + port
	raw, err := json.Marshal(sharedConfig(e))
	if err != nil {
		return fail(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		return fail(fmt.Errorf("loading the gateway config: %w", err))
	}
	// The first handshake waits for the internal CA's certificate.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sum, err := smtpload.Run(ctx, smtpload.Config{Addr: e.gateway, Messages: 5, Senders: 1, StartTLS: true, Timeout: 30 * time.Second})
	if err == nil && sum.Accepted != 5 {
		err = fmt.Errorf("warm-up: %s", sum)
	}
	if err == nil {
		_, err = sink.Wait(5, 30*time.Second)
	}
	if err != nil {
		_ = caddy.Stop()
		return fail(fmt.Errorf("warm-up through the gateway: %w", err))
	}
	return e, nil
}

// gatewayConfig is what bench/run.sh runs: STARTTLS with a certificate
// from Caddy's internal CA, the queue on disk, example.test relayed to the
// sink with opportunistic STARTTLS, no per-address limits (all load comes
// from 127.0.0.1).
func gatewayConfig(dir, listen, sink string) map[string]any {
	return map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "storage")},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"tls": map[string]any{"automation": map[string]any{"policies": []any{
				map[string]any{"issuers": []any{map[string]any{"module": "internal"}}},
			}}},
			"smtp": map[string]any{
				"hostname":     "localhost",
				"grace_period": "2s",
				"queue":        map[string]any{"path": filepath.Join(dir, "queue")},
				"servers": map[string]any{"gateway": map[string]any{
					"listen":                 []any{map[string]any{"address": listen}},
					"max_connections_per_ip": -1,
					"connection_rate_per_ip": -1,
					"message_rate_per_ip":    -1,
					"recipient_rate_per_ip":  -1,
					"routes": []any{map[string]any{
						"domains": []string{"example.test"},
						"deliver": map[string]any{"target": "relay", "hosts": []string{sink}, "tls": "opportunistic"},
					}},
				}},
			},
		},
	}
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port), nil
}

// relay sends n messages of size bytes through addr and waits until the
// sink has them; it returns the load summary and the end-to-end rate.
func relay(tb testing.TB, sink *smtpsink.Sink, addr string, n, size int) (*smtpload.Summary, float64) {
	tb.Helper()
	return relayWith(tb, sink, addr, n, size, nil)
}

// relayWith is relay with every message passed through sign first.
func relayWith(tb testing.TB, sink *smtpsink.Sink, addr string, n, size int, sign func([]byte) ([]byte, error)) (*smtpload.Summary, float64) {
	tb.Helper()
	before := sink.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sum, err := smtpload.Run(ctx, smtpload.Config{Addr: addr, Messages: n, Size: size, StartTLS: true, Senders: 20, PerConn: 10, Sign: sign})
	if err != nil {
		tb.Fatal(err)
	}
	if sum.Accepted != int64(n) {
		tb.Fatalf("%s", sum)
	}
	after, err := sink.Wait(before.Messages+sum.Accepted, 5*time.Minute)
	if err != nil {
		tb.Fatalf("%d of %d messages reached the sink: %v", after.Messages-before.Messages, n, err)
	}
	if tlsN := after.TLSMessages - before.TLSMessages; tlsN != int64(n) {
		tb.Fatalf("%d of %d messages reached the sink over TLS", tlsN, n)
	}
	secs := float64(after.LastUnixNano-sum.StartUnixNano) / 1e9
	return sum, float64(n) / secs
}

// TestGatewayRelaySmoke sends a few messages through the in-process
// gateway: the benchmark's set-up works and both hops use TLS.
func TestGatewayRelaySmoke(t *testing.T) {
	e := gatewayEnv(t)
	sum, e2e := relay(t, e.sink, e.gateway, 40, 4096)
	if sum.Accept.Count != 40 || sum.Accept.P99 <= 0 || e2e <= 0 {
		t.Fatalf("implausible figures: %s, %.0f msg/s end to end", sum, e2e)
	}
}

// TestLoadIntoSink loads the sink directly (the baseline of run.sh).
func TestLoadIntoSink(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	sum, e2e := relay(t, sink, sink.Addr(), 100, 2000)
	// 20 senders share 100 messages, at most 10 per connection.
	if sum.Connections < 10 || sum.Connections > 100 || sum.Failed != 0 || e2e <= 0 {
		t.Fatalf("%s: %d connections", sum, sum.Connections)
	}
	if st := sink.Stats(); st.Bytes != 100*2000 {
		t.Fatalf("sink received %d bytes, want %d", st.Bytes, 100*2000)
	}
}

// TestIdleConnections holds a few connections open to the sink.
func TestIdleConnections(t *testing.T) {
	sink, err := smtpsink.Start(smtpsink.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	var openSessions int64
	sum, err := smtpload.RunIdle(context.Background(), smtpload.IdleConfig{
		Load:  smtpload.Config{Addr: sink.Addr(), StartTLS: true},
		Conns: 8, Dialers: 3, Hold: 10 * time.Millisecond,
	}, func(*smtpload.IdleSummary) { openSessions = sink.Stats().Connections })
	if err != nil {
		t.Fatal(err)
	}
	// Every connection is two sessions at the sink: before and after STARTTLS.
	if sum.Opened != 8 || sum.Dropped != 0 || openSessions != 16 {
		t.Fatalf("opened %d, dropped %d, sink saw %d sessions: %+v", sum.Opened, sum.Dropped, openSessions, sum)
	}
}

// TestRefusedConnections: a dead address ends the run with errors, not a
// hang.
func TestRefusedConnections(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	sum, err := smtpload.Run(context.Background(), smtpload.Config{Addr: "127.0.0.1:" + port, Messages: 3, Senders: 2, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Accepted != 0 || sum.Attempted != 3 || sum.Errors["connect"] != 3 {
		t.Fatalf("%+v", sum)
	}
}

func benchmarkRelay(b *testing.B, addr func(*env) string, size int) {
	e := gatewayEnv(b)
	benchmarkLoad(b, e, addr(e), size, nil)
}

// benchmarkLoad sends b.N messages (signed when sign is set) through
// target and reports the rates, CPU and latencies.
func benchmarkLoad(b *testing.B, e *env, target string, size int, sign func([]byte) ([]byte, error)) {
	b.SetBytes(int64(size))
	cpu0 := processCPU()
	b.ResetTimer()
	sum, e2e := relayWith(b, e.sink, target, b.N, size, sign)
	b.StopTimer()
	b.ReportMetric(e2e, "msg/s")
	// The whole test process: load generator, gateway and sink together
	// (BenchmarkSinkDirect gives the share of the first and the last).
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/msg")
	b.ReportMetric(sum.Accept.P50, "p50-accept-ms")
	b.ReportMetric(sum.Accept.P99, "p99-accept-ms")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGatewayRelay: end-to-end messages per second through the
// gateway into the sink, and the accept latency.
func BenchmarkGatewayRelay(b *testing.B) {
	for _, size := range []int{4096, 102400} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			benchmarkRelay(b, func(e *env) string { return e.gateway }, size)
		})
	}
}

// BenchmarkSinkDirect is the baseline: the same load straight into the
// sink.
func BenchmarkSinkDirect(b *testing.B) {
	benchmarkRelay(b, func(e *env) string { return e.sink.Addr() }, 4096)
}
