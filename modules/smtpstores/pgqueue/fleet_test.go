package pgqueue_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	_ "github.com/caddy-smtp/caddy-smtp/modules/standard"
)

func TestMain(m *testing.M) {
	testpg.RunNode()
	os.Exit(m.Run())
}

// sink is the next hop of the fleet: it records which node delivered
// which message (by its X-Load-Seq), and answers 451 while closed.
type sink struct {
	addr   string
	closed atomic.Bool
	mu     sync.Mutex
	got    map[int][]string // seq -> EHLO names of the deliveries
}

func startSink(t testing.TB) *sink {
	k := &sink{got: map[int][]string{}}
	s := gosmtp.NewServer(k)
	s.Domain = "sink.test"
	s.AllowInsecureAuth = true
	s.ErrorLog = quiet{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k.addr = l.Addr().String()
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return k
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}
func (quiet) Println(...any)        {}

func (k *sink) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	return &sinkSession{k: k, helo: c.Hostname()}, nil
}

type sinkSession struct {
	k    *sink
	helo string
}

func (s *sinkSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (s *sinkSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (s *sinkSession) Reset()                                 {}
func (s *sinkSession) Logout() error                          { return nil }
func (s *sinkSession) Data(r io.Reader) error {
	msg, err := textproto.NewReader(bufio.NewReader(r)).ReadMIMEHeader()
	if err != nil {
		return err
	}
	if s.k.closed.Load() {
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "closed for now"}
	}
	seq, _ := strconv.Atoi(msg.Get("X-Load-Seq"))
	s.k.mu.Lock()
	s.k.got[seq] = append(s.k.got[seq], s.helo)
	s.k.mu.Unlock()
	return nil
}

// tally compares the accepted messages with the deliveries: how many were
// delivered, delivered twice (or more), delivered though not accepted
// (the node died between COMMIT and its 250), and how many of node's
// were delivered by another node.
func (k *sink) tally(accepted map[int]string) (delivered, dups, unaccepted, takenOver int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for seq, by := range k.got {
		dups += len(by) - 1
		node, ok := accepted[seq]
		if !ok {
			unaccepted++
			continue
		}
		delivered++
		if by[0] != node {
			takenOver++
		}
	}
	return
}

// fleet is gateway processes on one queue database.
type fleet struct {
	t     testing.TB
	addrs []string
	hosts []string
	procs []*exec.Cmd
}

// fleets numbers the fleets a test binary starts, so that node names
// never repeat (a name stays in use until its lease ends).
var fleets atomic.Int32

func startFleet(t testing.TB, srv *testpg.Server, next string, n int) *fleet {
	f := &fleet{t: t}
	seq := fleets.Add(1)
	dir := t.TempDir()
	for i := range n {
		// A loopback address per node, 127.0.0.2 and up (all of
		// 127/8 is local on Linux).
		addr := fmt.Sprintf("127.0.0.%d:%d", i+2, testutil.FreePort(t))
		host := fmt.Sprintf("mx%d-%d.fleet.internal", seq, i) // internal: a certificate from Caddy's local CA
		cfg := map[string]any{
			"admin":   map[string]any{"disabled": true},
			"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "INFO"}}},
			"apps": map[string]any{
				"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
				"smtp": map[string]any{
					"hostname": host,
					"queue": map[string]any{
						"path":          filepath.Join(dir, "spool"+strconv.Itoa(i)),
						"store":         map[string]any{"module": "postgres", "dsn": "{env.FLEET_PG_DSN}", "node": host, "lease": "3s"},
						"retry_initial": "100ms", "retry_max": "300ms",
					},
					"servers": map[string]any{"mx": map[string]any{
						"listen": []any{map[string]any{"address": addr}},
						// The load comes from one address: no per-address
						// rates, so that a 4xx means the database.
						"connection_rate_per_ip": -1, "message_rate_per_ip": -1, "recipient_rate_per_ip": -1,
					}},
					"routes": []any{map[string]any{
						"domains": []string{"example.test"},
						"deliver": map[string]any{"target": "relay", "hosts": []string{next}, "tls": "none"},
					}},
				},
			},
		}
		raw, _ := json.Marshal(cfg)
		path := filepath.Join(dir, host+".json")
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		// This test binary as a Caddy process (TestMain).
		f.procs = append(f.procs, testutil.StartProcess(t, filepath.Join(dir, host+".log"),
			[]string{testpg.NodeEnv + "=" + path, "FLEET_PG_DSN=" + srv.DSN()}, os.Args[0]))
		f.addrs, f.hosts = append(f.addrs, addr), append(f.hosts, host)
	}
	for _, a := range f.addrs {
		testutil.WaitForPort(t, a, 60*time.Second)
	}
	return f
}

// send submits one message with sequence number seq; it returns the
// reply code to DATA (-1 when no connection could be made, 0 when it
// broke).
func send(addr string, seq int) int {
	code := func(err error) int {
		var te *textproto.Error
		if errors.As(err, &te) {
			return te.Code
		}
		return 0
	}
	c, err := smtp.Dial(addr)
	if err != nil {
		if n := code(err); n != 0 {
			return n // a greeting such as 421
		}
		return -1
	}
	defer c.Close()
	if err := c.Hello("load.test"); err != nil {
		return code(err)
	}
	if err := c.Mail("load@sender.test"); err != nil {
		return code(err)
	}
	if err := c.Rcpt("r@example.test"); err != nil {
		return code(err)
	}
	w, err := c.Data()
	if err != nil {
		return code(err)
	}
	fmt.Fprintf(w, "X-Load-Seq: %d\r\nSubject: load %d\r\n\r\n%s\r\n", seq, seq, strings.Repeat(strings.Repeat("x", 78)+"\r\n", 50))
	if err := w.Close(); err != nil {
		return code(err)
	}
	_ = c.Quit()
	return 250
}

// load sends to the nodes in turn until stop is closed, recording which
// node accepted which message and the replies other than 250.
type load struct {
	mu       sync.Mutex
	seq      int
	accepted map[int]string // seq -> host of the accepting node
	replies  map[int]int    // reply code -> count (see send)
}

// startLoad sends to every node of f until stop is called.
func startLoad(f *fleet) (l *load, stop func()) {
	l = &load{accepted: map[int]string{}, replies: map[int]int{}}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range f.addrs {
		wg.Go(func() { l.run(f, i, done) })
	}
	return l, func() {
		close(done)
		wg.Wait()
	}
}

func (l *load) run(f *fleet, node int, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		l.mu.Lock()
		l.seq++
		seq := l.seq
		l.mu.Unlock()
		code := send(f.addrs[node], seq)
		l.mu.Lock()
		if code == 250 {
			l.accepted[seq] = f.hosts[node]
		} else {
			l.replies[code]++
		}
		l.mu.Unlock()
		if code == -1 {
			return // the node is gone
		}
	}
}

func (l *load) count() (accepted int, replies map[int]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	replies = map[int]int{}
	for k, v := range l.replies {
		replies[k] = v
	}
	return len(l.accepted), replies
}

// Three gateways take load; one is killed with SIGKILL in the middle.
// Every message any node accepted is delivered, the dead node's by the
// others once its lease expired; duplicates are counted and reported.
func TestFleetNodeKilled(t *testing.T) {
	srv := testpg.Start(t)
	next := startSink(t)
	next.closed.Store(true) // everything queues until the load is over
	f := startFleet(t, srv, next.addr, 3)
	l, stop := startLoad(f)
	testutil.Eventually(t, 60*time.Second, "30 messages accepted", func() bool { n, _ := l.count(); return n >= 30 })
	_ = f.procs[1].Process.Signal(syscall.SIGKILL)
	killedAt, _ := l.count()
	testutil.Eventually(t, 60*time.Second, "30 more messages accepted", func() bool { n, _ := l.count(); return n >= killedAt+30 })
	stop()
	next.closed.Store(false)

	accepted, replies := l.count()
	var fromDead int
	for _, host := range l.accepted {
		if host == f.hosts[1] {
			fromDead++
		}
	}
	if fromDead == 0 {
		t.Fatal("the killed node had accepted nothing")
	}
	testutil.Eventually(t, 60*time.Second, "every accepted message to be delivered", func() bool {
		d, _, _, _ := next.tally(l.accepted)
		return d == accepted
	})
	delivered, dups, unaccepted, takenOver := next.tally(l.accepted)
	t.Logf("accepted %d (%d by the killed node), delivered %d, taken over %d, duplicates %d, delivered but not acknowledged %d, other replies %v",
		accepted, fromDead, delivered, takenOver, dups, unaccepted, replies)
	if takenOver < fromDead {
		t.Errorf("only %d of the killed node's %d messages were delivered by the others", takenOver, fromDead)
	}
	for code := range replies {
		if code >= 500 {
			t.Errorf("permanent replies during the load: %v", replies)
		}
	}
}

// PostgreSQL stops during the load, for longer than the nodes' lease: the
// gateways answer 4xx meanwhile, accept again once it is back, and
// deliver everything they accepted.
func TestFleetDatabaseRestart(t *testing.T) {
	srv := testpg.Start(t)
	next := startSink(t)
	f := startFleet(t, srv, next.addr, 2)
	l, stop := startLoad(f)
	testutil.Eventually(t, 60*time.Second, "20 messages accepted", func() bool { n, _ := l.count(); return n >= 20 })
	srv.Stop(t)
	testutil.Eventually(t, 60*time.Second, "a 4xx reply while the database is down", func() bool {
		_, r := l.count()
		return r[451]+r[421]+r[452] > 0
	})
	// Keep it down longer than the nodes' lease: their claims lapse, and
	// they must sort out who owns what when it is back.
	failing := time.Now()
	testutil.Eventually(t, 60*time.Second, "an outage longer than the lease", func() bool {
		return time.Since(failing) > 3*time.Second+time.Second
	})
	down, _ := l.count()
	srv.Restart(t)
	testutil.Eventually(t, 60*time.Second, "messages accepted again", func() bool { n, _ := l.count(); return n >= down+20 })
	stop()
	accepted, replies := l.count()
	testutil.Eventually(t, 60*time.Second, "every accepted message to be delivered", func() bool {
		d, _, _, _ := next.tally(l.accepted)
		return d == accepted
	})
	_, dups, unaccepted, _ := next.tally(l.accepted)
	t.Logf("accepted %d, duplicates %d, delivered but not acknowledged %d, other replies %v", accepted, dups, unaccepted, replies)
	for code := range replies {
		if code >= 500 {
			t.Errorf("permanent replies while the database was down: %v", replies)
		}
	}
}
