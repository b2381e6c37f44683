package smtpapp_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/caddy-smtp/caddy-smtp/smtpapp"

	"github.com/caddy-smtp/caddy-smtp/internal/dsntest"

	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/dsn"
	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// startRelayGateway runs the gateway with example.test relayed to the given
// hosts and sender.test delivered into a maildir (where DSNs land).
func (e *testEnv) startRelayGateway(relay map[string]any) (addr string, app *App) {
	e.t.Helper()
	relay["target"] = "relay"
	app = e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
		"routes": []any{
			map[string]any{"domains": []string{"example.test"}, "deliver": relay},
			map[string]any{"domains": []string{"sender.test"}, "deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true}},
		},
	}))
	return addrsOf(app, "mx")[0], app
}

// submit sends one message through the gateway and expects 250.
func submit(t *testing.T, addr, from, body string, rcpts ...string) {
	t.Helper()
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<"+from+">", "250")
	for _, r := range rcpts {
		d.cmd("RCPT TO:<"+r+">", "250")
	}
	d.cmd("DATA", "354")
	d.raw(body + "\r\n.\r\n")
	d.expect("250 2.0.0")
	d.cmd("QUIT", "221")
}

// readDSN waits for the DSN in sender.test's maildir and parses it.
func (e *testEnv) readDSN(local string) *dsntest.Parsed {
	e.t.Helper()
	files := e.waitMail("sender.test", local, 1)
	data, err := os.ReadFile(files[0])
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := dsntest.Parse(strings.NewReader(string(data)))
	if err != nil {
		e.t.Fatalf("parsing DSN: %v\n%s", err, data)
	}
	return p
}

func TestRelaySTARTTLSUsedWhenOffered(t *testing.T) {
	e := newTestEnv(t)
	tlsCfg, _ := testCertificate(t, "backend.test")
	r := startReceiver(t, receiverOpts{tls: tlsCfg})
	addr, _ := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}})
	submit(t, addr, "a@sender.test", "Subject: tls\r\nMessage-ID: <tls@test>\r\n\r\nhello", "user@example.test")
	m := r.waitMessages(1)[0]
	if !m.tls {
		t.Fatal("relayed in plaintext although STARTTLS was offered")
	}
	if m.helo != testHost {
		t.Errorf("EHLO name %q, want %q", m.helo, testHost)
	}
	if !strings.Contains(string(m.data), "Message-ID: <tls@test>") || !strings.HasPrefix(string(m.data), "Received: from client.example") {
		t.Errorf("relayed data:\n%s", m.data)
	}
}

// TestRelayBigMessageWithBDAT: a message of 300 KiB goes to a next hop
// that offers CHUNKING and PIPELINING with BDAT, byte for byte (lines that
// start with a dot included); a small one goes pipelined, MAIL to the end
// of its data in one write.
func TestRelayBigMessageWithBDAT(t *testing.T) {
	e := newTestEnv(t)
	r := startReceiver(t, receiverOpts{})
	addr, _ := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}, "tls": "none"})
	body := strings.Repeat(".a line that starts with a dot, and some more text\r\n", 6000) // 312 KB
	stuffed := strings.ReplaceAll(body, "\r\n.", "\r\n..")                                 // as DATA sends it
	// submit ends the data with CRLF "." CRLF: the body's last CRLF is that one.
	submit(t, addr, "a@sender.test", "Subject: big\r\n\r\n."+strings.TrimSuffix(stuffed, "\r\n"), "user@example.test")
	m := r.waitMessages(1)[0]
	if !strings.HasSuffix(string(m.data), "\r\n\r\n"+body) {
		t.Errorf("relayed body differs (%d bytes)", len(m.data))
	}
	if n := r.bdat.Load(); n == 0 {
		t.Error("no BDAT for a 300 KiB message")
	}
	big := r.bdat.Load()
	submit(t, addr, "a@sender.test", "Subject: small\r\n\r\nhello", "user@example.test")
	m = r.waitMessages(2)[1]
	if !strings.HasSuffix(string(m.data), "\r\n\r\nhello\r\n") {
		t.Errorf("small message relayed as %q", m.data)
	}
	if n := r.bdat.Load(); n != big+1 {
		t.Errorf("%d reads with BDAT after the small message, want %d", n, big+1)
	}
	if n := r.pipelined.Load(); n != 2 {
		t.Errorf("%d transactions arrived in one read, want 2 (the big one's first chunk and the small one)", n)
	}
}

// TestRelayBigMessageWithoutChunking: to a next hop that does not offer
// CHUNKING, a big message goes with DATA, byte for byte (dot lines
// stuffed on the way and unstuffed there).
func TestRelayBigMessageWithoutChunking(t *testing.T) {
	e := newTestEnv(t)
	r := startReceiver(t, receiverOpts{noChunking: true})
	addr, _ := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}, "tls": "none"})
	body := strings.Repeat(".a line that starts with a dot, and some more text\r\n", 6000)
	stuffed := strings.ReplaceAll(body, "\r\n.", "\r\n..")
	submit(t, addr, "a@sender.test", "Subject: big\r\n\r\n."+strings.TrimSuffix(stuffed, "\r\n"), "user@example.test")
	m := r.waitMessages(1)[0]
	if !strings.HasSuffix(string(m.data), "\r\n\r\n"+body) {
		t.Errorf("relayed body differs (%d bytes)", len(m.data))
	}
	if n := r.bdat.Load(); n != 0 {
		t.Errorf("%d BDAT commands to a server without CHUNKING", n)
	}
}

// TestDSNMessageIDLogged: a DSN's delivery line names its Message-ID, as
// an inbound message's does.
func TestDSNMessageIDLogged(t *testing.T) {
	e := newTestEnv(t)
	logFile := filepath.Join(t.TempDir(), "log.json")
	dead := freePort(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
		"routes": []any{
			map[string]any{"domains": []string{"example.test"}, "deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}")}},
			map[string]any{"domains": []string{"sender.test"}, "deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true}},
		},
		"outbound": map[string]any{"target": "relay", "hosts": []string{"127.0.0.1:" + strconv.Itoa(dead)}},
	}, logTo(logFile, "INFO")))
	enqueue(t, app, "s@sender.test", "nobody@example.test") // no mailbox: bounced at once
	p := e.readDSN("s")
	want := strings.Trim(p.Header.Get("Message-ID"), "<>")
	eventually(t, "the DSN's delivery line", func() bool {
		for _, l := range readLog(t, logFile, "delivery") {
			if l["rcpt"] == "s@sender.test" {
				return true
			}
		}
		return false
	})
	for _, l := range readLog(t, logFile, "delivery") {
		if l["rcpt"] == "s@sender.test" && (want == "" || l["message_id"] != want) {
			t.Errorf("DSN delivery line message_id %v, want %q", l["message_id"], want)
		}
	}
}

func TestRelayPlaintextFallbacks(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(t *testing.T) receiverOpts
	}{
		{"not offered", func(*testing.T) receiverOpts { return receiverOpts{} }},
		{"454 refused", func(t *testing.T) receiverOpts {
			c, _ := testCertificate(t, "backend.test")
			return receiverOpts{tls: c, refuse454: true}
		}},
		{"handshake fails", func(t *testing.T) receiverOpts {
			c, _ := testCertificate(t, "backend.test")
			c.MaxVersion = tls.VersionTLS11 // we require 1.2+
			return receiverOpts{tls: c}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			r := startReceiver(t, tc.opts(t))
			addr, app := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}})
			submit(t, addr, "a@sender.test", "Subject: p\r\n\r\nplain", "user@example.test")
			m := r.waitMessages(1)[0]
			if m.tls {
				t.Fatal("delivered over TLS?")
			}
			eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })
			if tc.name == "handshake fails" && r.conns.Load() != 2 {
				t.Errorf("%d connections; want 2 (handshake, then plaintext in the same attempt)", r.conns.Load())
			}
		})
	}
}

func TestRelayRequiredTLSDefersWithoutTLS(t *testing.T) {
	e := newTestEnv(t)
	r := startReceiver(t, receiverOpts{})
	addr, app := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}, "tls": "required"})
	submit(t, addr, "a@sender.test", "Subject: r\r\n\r\nx", "user@example.test")
	eventually(t, "deferred attempts", func() bool {
		msgs := app.TestQueue().Messages()
		return len(msgs) == 1 && msgs[0].Attempts >= 2
	})
	if n := len(r.messages()); n != 0 {
		t.Fatalf("%d messages delivered in plaintext at level required", n)
	}
}

func TestRelayTemporaryFailureRetried(t *testing.T) {
	e := newTestEnv(t)
	r := startReceiver(t, receiverOpts{})
	var calls atomic.Int32
	r.rcptErr = func(string) error {
		if calls.Add(1) == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again"}
		}
		return nil
	}
	addr, app := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}})
	submit(t, addr, "a@sender.test", "Subject: r\r\n\r\nx", "user@example.test")
	r.waitMessages(1)
	eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })
	if calls.Load() != 2 {
		t.Errorf("%d RCPT attempts, want 2", calls.Load())
	}
	if len(e.mailFiles("sender.test", "a")) != 0 {
		t.Error("DSN sent for a temporary failure")
	}
}

func TestRelayPartialFailureBounces(t *testing.T) {
	e := newTestEnv(t)
	r := startReceiver(t, receiverOpts{})
	r.rcptErr = func(rcpt string) error {
		if strings.HasPrefix(rcpt, "nobody@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	addr, app := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}})
	submit(t, addr, "bounce-me@sender.test", "Subject: partial\r\nMessage-ID: <partial@test>\r\n\r\nx", "user@example.test", "nobody@example.test")
	m := r.waitMessages(1)[0]
	if len(m.rcpts) != 1 || m.rcpts[0] != "user@example.test" {
		t.Fatalf("receiver got recipients %v", m.rcpts)
	}
	p := e.readDSN("bounce-me")
	if len(p.Report.Recipients) != 1 {
		t.Fatalf("DSN recipients %+v", p.Report.Recipients)
	}
	rc := p.Report.Recipients[0]
	if rc.Final != "nobody@example.test" || rc.Action != dsn.Failed || rc.Status != "5.1.1" ||
		!strings.Contains(rc.Diagnostic, "550 5.1.1 no such user") {
		t.Fatalf("DSN recipient %+v", rc)
	}
	if p.Header.Get("Auto-Submitted") == "" || !strings.Contains(string(p.Original), "Message-ID: <partial@test>") {
		t.Fatalf("DSN headers/original wrong: %v\n%s", p.Header, p.Original)
	}
	eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })
}

func TestRelayPermanentDataFailureBounces(t *testing.T) {
	e := newTestEnv(t)
	r := startReceiver(t, receiverOpts{})
	r.dataErr = func() error {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "content rejected"}
	}
	addr, _ := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}})
	submit(t, addr, "s@sender.test", "Subject: spam\r\n\r\nx", "user@example.test", "other@example.test")
	p := e.readDSN("s")
	if len(p.Report.Recipients) != 2 {
		t.Fatalf("DSN recipients %+v", p.Report.Recipients)
	}
	for _, rc := range p.Report.Recipients {
		if rc.Status != "5.7.1" || !strings.Contains(rc.Diagnostic, "554 5.7.1 content rejected") {
			t.Fatalf("DSN recipient %+v", rc)
		}
	}
}

func TestRelayConnectionFailuresRetryAndFailover(t *testing.T) {
	e := newTestEnv(t)
	// A port nobody listens on (connection refused) and a tarpit that
	// accepts but never greets (timeout).
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	tarpit, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tarpit.Close()
	go func() {
		for {
			c, err := tarpit.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addr, app := e.startRelayGateway(map[string]any{"hosts": []string{deadAddr, tarpit.Addr().String()}, "timeout": "200ms"})
	submit(t, addr, "a@sender.test", "Subject: r\r\n\r\nx", "user@example.test")
	var last string
	eventually(t, "retries", func() bool {
		msgs := app.TestQueue().Messages()
		if len(msgs) == 1 {
			last = msgs[0].Recipients[0].LastReply
		}
		return len(msgs) == 1 && msgs[0].Attempts >= 2
	})
	if !strings.Contains(last, "refused") || !strings.Contains(last, "greeting") {
		t.Errorf("last error %q should name both failures", last)
	}
	if len(e.mailFiles("sender.test", "a")) != 0 {
		t.Error("DSN sent for connection failures")
	}

	// Failover: a dead first host, a working second one.
	e2 := newTestEnv(t)
	r := startReceiver(t, receiverOpts{})
	addr2, _ := e2.startRelayGateway(map[string]any{"hosts": []string{deadAddr, r.addr}})
	submit(t, addr2, "a@sender.test", "Subject: f\r\n\r\nx", "user@example.test")
	r.waitMessages(1)
}

func TestRelayReusesConnections(t *testing.T) {
	e := newTestEnv(t)
	tlsCfg, _ := testCertificate(t, "backend.test")
	r := startReceiver(t, receiverOpts{tls: tlsCfg})
	// Hold the first delivery so that the others queue up behind it.
	release := make(chan struct{})
	var first atomic.Bool
	r.dataErr = func() error {
		if first.CompareAndSwap(false, true) {
			<-release
		}
		return nil
	}
	addr, app := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}})
	const n = 30
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	for i := 0; i < n; i++ {
		if rep := d.sendMail("a@sender.test", fmt.Sprintf("u%d@example.test", i), fmt.Sprintf("Subject: %d\r\n\r\nx", i)); !strings.HasPrefix(rep, "250") {
			t.Fatalf("message %d: %q", i, rep)
		}
	}
	close(release)
	r.waitMessages(n)
	eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })
	if c := r.conns.Load(); c > 10 {
		t.Errorf("%d connections for %d messages: not reusing connections", c, n)
	}
	for _, m := range r.messages() {
		if !m.tls {
			t.Fatal("a message went in plaintext")
		}
	}
}

// startMX starts a receiver on ip:port.
func startMXAt(t *testing.T, ip string, port int) *receiver {
	return startReceiver(t, receiverOpts{addr: net.JoinHostPort(ip, fmt.Sprint(port))})
}

// freeSharedPort finds a port free on several loopback addresses.
func freeSharedPort(t *testing.T, ips ...string) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		port := freePort(t)
		ok := true
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no port free on all addresses")
	return 0
}

func TestMXDelivery(t *testing.T) {
	dns := testdns.Start(t)
	port := freeSharedPort(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	primary := startMXAt(t, "127.0.0.2", port)
	backup := startMXAt(t, "127.0.0.3", port)
	implicit := startMXAt(t, "127.0.0.4", port)
	dns.AddMX("remote.test", 20, "backup.remote.test")
	dns.AddMX("remote.test", 10, "primary.remote.test")
	dns.AddA("primary.remote.test", "127.0.0.2")
	dns.AddA("backup.remote.test", "127.0.0.3")
	dns.AddMX("down.test", 10, "primary.down.test")
	dns.AddMX("down.test", 20, "backup.down.test")
	dns.AddA("primary.down.test", "127.0.0.5") // nothing listens there
	dns.AddA("backup.down.test", "127.0.0.3")
	dns.AddA("nomx.test", "127.0.0.4") // no MX: the A record is the mail host
	dns.SetNullMX("nullmx.test")

	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
		"routes": []any{map[string]any{"domains": []string{"sender.test"},
			"deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true}}},
		"outbound": map[string]any{"target": "mx", "resolvers": []string{dns.Addr()}, "port": port, "connect_timeout": "2s"},
	}))
	// Outbound mail (the submission path arrives with AUTH): enqueue it
	// directly, as an authenticated session would.
	send := func(rcpt string) { t.Helper(); enqueue(t, app, "s@sender.test", rcpt) }
	send("a@remote.test")
	if m := primary.waitMessages(1)[0]; m.rcpts[0] != "a@remote.test" {
		t.Fatalf("primary got %v", m.rcpts)
	}
	if len(backup.messages()) != 0 {
		t.Fatal("backup MX used although the primary answered")
	}
	send("b@down.test")
	backup.waitMessages(1)
	send("c@nomx.test")
	implicit.waitMessages(1)
	send("d@nullmx.test")
	p := e.readDSN("s")
	if rc := p.Report.Recipients[0]; rc.Status != "5.1.10" || rc.Final != "d@nullmx.test" {
		t.Fatalf("null MX DSN %+v", rc)
	}
	send("e@nxdomain.test")
	eventually(t, "second DSN", func() bool { return len(e.mailFiles("sender.test", "s")) == 2 })
	eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })
}

// TestMXAddressOrderAndSource: a host's addresses are tried IPv6 first and
// then alternating (RFC 8305), so max_addresses 2 reaches the IPv6 address
// that answers although two IPv4 addresses that do not come first in the
// DNS answer; source_addresses picks the local address of the family
// (the receiver sees 127.0.0.5 and ::1 as the client).
func TestMXAddressOrderAndSource(t *testing.T) {
	dns := testdns.Start(t)
	port := freeSharedPort(t, "::1", "127.0.0.2")
	v6 := startMXAt(t, "::1", port)
	v4 := startMXAt(t, "127.0.0.2", port)
	dns.AddMX("dual.test", 10, "mx.dual.test")
	dns.AddA("mx.dual.test", "127.0.0.3") // nothing listens on these two
	dns.AddA("mx.dual.test", "127.0.0.4")
	dns.AddAAAA("mx.dual.test", "::1")
	dns.AddMX("v4.test", 10, "mx.v4.test")
	dns.AddA("mx.v4.test", "127.0.0.2")

	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
		"outbound": map[string]any{"target": "mx", "resolvers": []string{dns.Addr()}, "port": port, "connect_timeout": "2s",
			"max_addresses": 2, "source_addresses": []string{"127.0.0.5", "::1"}},
	}))
	for _, rcpt := range []string{"a@dual.test", "b@v4.test"} {
		id := queue.NewID()
		w, err := app.TestQueue().Create(id)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "Subject: to %s\r\n\r\nbody\r\n", rcpt)
		if err := app.TestQueue().Commit(w, &queue.Message{From: "s@sender.test", Arrived: time.Now(),
			Recipients: []*queue.Recipient{{Addr: rcpt}}}); err != nil {
			t.Fatal(err)
		}
	}
	if m := v6.waitMessages(1)[0]; m.rcpts[0] != "a@dual.test" || !strings.HasPrefix(m.remote, "[::1]:") {
		t.Errorf("over IPv6: %v from %s", m.rcpts, m.remote)
	}
	if m := v4.waitMessages(1)[0]; m.rcpts[0] != "b@v4.test" || !strings.HasPrefix(m.remote, "127.0.0.5:") {
		t.Errorf("over IPv4: %v from %s, want from the source address 127.0.0.5", m.rcpts, m.remote)
	}
}

// TestDelayAndDoubleBounce: a message that still waits after
// delay_warning brings its sender one "delayed" DSN (not one per retry),
// with the last error and when retries end; a DSN that cannot be
// delivered (its recipient refuses it) goes to the postmaster as a double
// bounce, and a report to the postmaster that fails is dropped, not
// reported again.
func TestDelayAndDoubleBounce(t *testing.T) {
	e := newTestEnv(t)
	dead := deadAddr(t)
	refusing := startReceiver(t, receiverOpts{})
	refusing.rcptErr = func(string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	maildir := map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true}
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
		"routes": []any{
			map[string]any{"domains": []string{"example.test"}, "deliver": map[string]any{"target": "relay", "hosts": []string{dead}, "connect_timeout": "1s"}},
			map[string]any{"domains": []string{"refusing.test"}, "deliver": map[string]any{"target": "relay", "hosts": []string{refusing.addr}}},
			map[string]any{"domains": []string{"sender.test"}, "deliver": maildir},
		},
		"queue": map[string]any{"path": e.spool, "retry_initial": "100ms", "retry_max": "200ms", "max_age": "1h",
			"delay_warning": "300ms", "postmaster": "postmaster@sender.test"},
	}))
	addr := addrsOf(app, "mx")[0]
	submit(t, addr, "s@sender.test", "Subject: slow\r\nMessage-ID: <slow@test>\r\n\r\nhello", "user@example.test")
	p := e.readDSN("s")
	rc := p.Report.Recipients[0]
	if rc.Action != "delayed" || !strings.HasPrefix(rc.Status, "4.") || rc.Final != "user@example.test" || rc.WillRetryUntil.IsZero() {
		t.Fatalf("delay DSN %+v", rc)
	}
	eventually(t, "more retries after the warning", func() bool {
		msgs := app.TestQueue().Messages()
		return len(msgs) == 1 && msgs[0].Attempts >= 6
	})
	if n := len(e.mailFiles("sender.test", "s")); n != 1 {
		t.Fatalf("%d delay DSNs, want 1", n)
	}
	if n := app.TestCounter("deliveryResults", "deferred", "connect"); n < 6 {
		t.Errorf("deferred attempts for a relay that refuses connections counted %v times as connect, want every one", n)
	}

	// A DSN whose recipient refuses it: to the postmaster.
	enqueue := func(to string, double bool) {
		t.Helper()
		w, err := app.TestQueue().Create(queue.NewID())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "From: MAILER-DAEMON@elsewhere.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nyour message\r\n")
		if err := app.TestQueue().Commit(w, &queue.Message{From: "", Arrived: time.Now(), DoubleBounce: double,
			Recipients: []*queue.Recipient{{Addr: to, Notify: []string{"NEVER"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	enqueue("gone@refusing.test", false)
	pm := e.readDSN("postmaster")
	if r := pm.Report.Recipients[0]; r.Action != "failed" || r.Final != "gone@refusing.test" || r.Status != "5.1.1" {
		t.Fatalf("the postmaster's report: %+v", r)
	}
	if to := pm.Header.Get("To"); !strings.Contains(to, "postmaster@sender.test") {
		t.Errorf("the report is addressed to %q", to)
	}
	eventually(t, "the double bounce delivered, the queue holding only the slow message", func() bool { return app.TestQueue().Len() == 1 })
	// A report to the postmaster that fails is not reported again.
	enqueue("gone@refusing.test", true)
	eventually(t, "the failed report dropped", func() bool { return app.TestQueue().Len() == 1 })
	if n := len(e.mailFiles("sender.test", "postmaster")); n != 1 {
		t.Errorf("the postmaster got %d reports, want 1 (a failed report to the postmaster is not reported)", n)
	}
}

// TestConnectionLostAtRcpt: a next hop that drops the connection at the
// second RCPT: neither recipient counts as delivered (the first was
// accepted but got no data); both are retried.
func TestConnectionLostAtRcpt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var sessions atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sessions.Add(1)
				r := bufio.NewReader(c)
				fmt.Fprint(c, "220 flaky.test ESMTP\r\n")
				rcpts := 0
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch cmd := strings.ToUpper(strings.Fields(line + " x")[0]); cmd {
					case "EHLO":
						fmt.Fprint(c, "250-flaky.test\r\n250 8BITMIME\r\n")
					case "MAIL":
						fmt.Fprint(c, "250 2.1.0 ok\r\n")
					case "RCPT":
						if rcpts++; rcpts == 2 {
							return // the connection drops
						}
						fmt.Fprint(c, "250 2.1.5 ok\r\n")
					case "QUIT":
						fmt.Fprint(c, "221 bye\r\n")
						return
					default:
						fmt.Fprint(c, "250 ok\r\n")
					}
				}
			}()
		}
	}()
	e := newTestEnv(t)
	addr, app := e.startRelayGateway(map[string]any{"hosts": []string{ln.Addr().String()}})
	submit(t, addr, "a@sender.test", "Subject: two\r\n\r\nhello", "one@example.test", "two@example.test")
	eventually(t, "two attempts", func() bool {
		msgs := app.TestQueue().Messages()
		return sessions.Load() >= 2 && len(msgs) == 1 && msgs[0].Attempts >= 2
	})
	m := app.TestQueue().Messages()[0]
	for _, r := range m.Recipients {
		if r.Status != queue.Pending {
			t.Errorf("%s: %s (%s), want pending: no data was sent", r.Addr, r.Status, r.LastReply)
		}
	}
}
