package smtpapp

import (
	"cmp"
	"net"
	"net/textproto"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// rateTable counts events per key in fixed windows (connections per IP per
// minute, failed logins per user, ...). Memory stays bounded: when the
// table reaches its size, expired windows are swept, and if a flood of
// distinct clients keeps it full, the windows closest to their end are
// dropped (an eighth of the table at a time, so the cost stays small per
// new key).
type rateTable struct {
	mu      sync.Mutex
	max     int
	windows map[string]*rateWindow
}

// rateTables holds the app's rate table across config reloads, so that a
// reload does not give every client a fresh budget (Provision of the new
// config takes the table the old one used).
var rateTables = caddy.NewUsagePool()

// rateTableKey is the key of the rate table in rateTables.
const rateTableKey = "smtp.limits"

// Destruct implements caddy.Destructor: nothing to release.
func (t *rateTable) Destruct() error { return nil }

type rateWindow struct {
	start time.Time
	span  time.Duration
	count int
}

// maxRateKeys is the table size above which expired windows are swept.
const maxRateKeys = 100_000

func newRateTable(max int) *rateTable {
	return &rateTable{max: max, windows: make(map[string]*rateWindow)}
}

func (t *rateTable) window(key string, span time.Duration, now time.Time) *rateWindow {
	w := t.windows[key]
	if w == nil || now.Sub(w.start) >= span {
		if w == nil && len(t.windows) >= t.max {
			t.sweep(now)
			if len(t.windows) >= t.max {
				t.evict(now, max(1, t.max/8))
			}
		}
		w = &rateWindow{start: now, span: span}
		t.windows[key] = w
	}
	return w
}

// sweep drops windows that have ended.
func (t *rateTable) sweep(now time.Time) {
	for k, w := range t.windows {
		if now.Sub(w.start) >= w.span {
			delete(t.windows, k)
		}
	}
}

// evict drops the n windows that end soonest.
func (t *rateTable) evict(now time.Time, n int) {
	type ending struct {
		key  string
		left time.Duration
	}
	all := make([]ending, 0, len(t.windows))
	for k, w := range t.windows {
		all = append(all, ending{k, w.span - now.Sub(w.start)})
	}
	slices.SortFunc(all, func(a, b ending) int { return cmp.Compare(a.left, b.left) })
	for _, e := range all[:min(n, len(all))] {
		delete(t.windows, e.key)
	}
}

// len returns the number of windows held.
func (t *rateTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.windows)
}

// add counts one event and returns the count in the current window.
func (t *rateTable) add(key string, span time.Duration) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.window(key, span, time.Now())
	w.count++
	return w.count
}

// count returns the events in the current window.
func (t *rateTable) count(key string, span time.Duration) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.window(key, span, time.Now()).count
}

// allow counts one event and reports whether it is within limit (a limit
// below zero means no limit).
func (t *rateTable) allow(key string, limit int, span time.Duration) bool {
	if limit < 0 {
		return true
	}
	return t.add(key, span) <= limit
}

// connState is what a server knows about one connection across its SMTP
// sessions (go-smtp starts a new session after STARTTLS).
type connState struct {
	badCommands atomic.Int32
	messages    atomic.Int32
	recipients  atomic.Int32
	// closeAfterReply makes the connection close once the next reply is
	// written (after a 421).
	closeAfterReply atomic.Bool
	// hookedText is go-smtp's text writer that replaces its fixed replies
	// (see replies.go); only touched on the connection's goroutine.
	hookedText *textproto.Conn

	// for the log line at the end of the connection
	mu         sync.Mutex
	helo       string
	tlsVersion string
	tlsCipher  string
	authUser   string
	accepted   int
	bytes      int64
	reason     string       // why we closed it, if we did
	hello      *clientHello // the last ClientHello, for a failed handshake
}

// note records session facts for the connection's last log line.
func (cs *connState) note(f func(cs *connState)) {
	cs.mu.Lock()
	f(cs)
	cs.mu.Unlock()
}

func (cs *connState) badCommand() int { return int(cs.badCommands.Add(1)) }

// IPNetworks is a parsed list of CIDRs (or single addresses), as
// relay_networks and the remote_ip matcher take them.
type IPNetworks []*net.IPNet

// ParseNetworks parses CIDRs and single IPv4 or IPv6 addresses.
func ParseNetworks(list []string) (IPNetworks, error) {
	var out IPNetworks
	for _, s := range list {
		if ip := net.ParseIP(s); ip != nil {
			bits := 128
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (ns IPNetworks) contains(ip string) bool { return ns.Contains(net.ParseIP(ip)) }

// Contains reports whether ip is in one of the networks (false for nil).
func (ns IPNetworks) Contains(addr net.IP) bool {
	if addr == nil {
		return false
	}
	for _, n := range ns {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}
