package smtpapp_test

import (
	"fmt"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// TestRateLimitsSurviveReload: a reload (a new config, same server name)
// keeps the per-address counters; a client that used its budget does not
// get a new one.
func TestRateLimitsSurviveReload(t *testing.T) {
	e := newTestEnv(t)
	cfg := func(size int) map[string]any {
		return e.config(map[string]any{"servers": map[string]any{"mx": map[string]any{
			"listen":              []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"message_rate_per_ip": 2,
			"max_message_size":    size,
		}}})
	}
	addr := addrsOf(e.load(cfg(100000)), "mx")[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	for range 2 {
		d.cmd("MAIL FROM:<a@sender.test>", "250")
		d.cmd("RSET", "250")
	}
	d.cmd("QUIT", "221")

	addr2 := addrsOf(e.load(cfg(200000)), "mx")[0]
	if addr2 != addr {
		t.Fatalf("listener moved from %s to %s", addr, addr2)
	}
	d2 := dial(t, addr)
	d2.expect("220")
	d2.cmd("EHLO client.example", "SIZE 200000") // the new config
	d2.cmd("MAIL FROM:<a@sender.test>", "451 4.7.1")
}

// TestLimitKey: IPv6 clients are counted by /64 unless configured
// otherwise, IPv4 by address (or a configured prefix), IPv4-mapped IPv6 as
// IPv4, zones dropped.
func TestLimitKey(t *testing.T) {
	for _, tc := range []struct {
		v4, v6   int
		ip, want string
	}{
		{0, 0, "192.0.2.7", "192.0.2.7"},
		{0, 0, "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{0, 0, "2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{0, 0, "::ffff:192.0.2.7", "192.0.2.7"},
		{0, 0, "fe80::1%eth0", "fe80::/64"},
		{24, 48, "192.0.2.7", "192.0.2.0/24"},
		{24, 48, "2001:db8:1:2:3:4:5:6", "2001:db8:1::/48"},
		{32, 128, "2001:db8::6", "2001:db8::6"},
	} {
		s := &smtpapp.Server{LimitIPv4Prefix: tc.v4, LimitIPv6Prefix: tc.v6}
		if got := s.TestLimitKey(tc.ip); got != tc.want {
			t.Errorf("prefixes %d/%d: %s counted as %q, want %q", tc.v4, tc.v6, tc.ip, got, tc.want)
		}
	}
}

// TestConnectionLimitPerPrefix: with limit_ipv4_prefix 8, two loopback
// addresses are one client for max_connections_per_ip.
func TestConnectionLimitPerPrefix(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"max_connections_per_ip": 1, "limit_ipv4_prefix": 8})[0]
	a := dialFrom(t, "127.0.0.1", addr)
	a.expect("220")
	dialFrom(t, "127.0.0.2", addr).expect("421 4.7.0", "too many connections from your address")
}

// TestRateTableBounded: a flood of distinct clients within one window does
// not grow the table beyond its size, and the newest clients are still
// counted.
func TestRateTableBounded(t *testing.T) {
	const size = 1000
	rt := smtpapp.NewTestRateTable(size)
	for i := range 20 * size {
		rt.Add(fmt.Sprintf("conn-rate:mx:198.51.%d.%d", i/256, i%256))
		if n := rt.Len(); n > size {
			t.Fatalf("after %d clients the table holds %d keys, more than %d", i+1, n, size)
		}
	}
	rt.Add("conn-rate:mx:203.0.113.1")
	if got := rt.Add("conn-rate:mx:203.0.113.1"); got != 2 {
		t.Fatalf("the newest client's count is %d, want 2", got)
	}
}
