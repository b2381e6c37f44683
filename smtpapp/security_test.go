package smtpapp_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	_ "github.com/mholt/caddy-l4/modules/l4proxyprotocol"
)

// hashPassword runs the real `caddy hash-password` of this repository.
var hashPassword = func() func(t *testing.T, algorithm string) string {
	var mu sync.Mutex
	cache := map[string]string{}
	return func(t *testing.T, algorithm string) string {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if h, ok := cache[algorithm]; ok {
			return h
		}
		out, err := exec.Command("go", "run", "../cmd/caddy", "hash-password", "--plaintext", "s3cret", "--algorithm", algorithm).Output()
		if err != nil {
			t.Fatalf("caddy hash-password --algorithm %s: %v", algorithm, err)
		}
		h := strings.TrimSpace(string(out))
		cache[algorithm] = h
		return h
	}
}()

// authServer returns a server config with AUTH accounts and TLS.
func authServer(t *testing.T, extra map[string]any) map[string]any {
	srv := map[string]any{
		"listen": []any{map[string]any{"address": "127.0.0.1:0"}},
		"authentication": map[string]any{"provider": "accounts", "accounts": []any{
			map[string]any{"username": "alice@example.test", "password": hashPassword(t, "bcrypt")},
			map[string]any{"username": "bob", "password": hashPassword(t, "argon2id"), "senders": []string{"@example.test"}},
		}},
	}
	for k, v := range extra {
		srv[k] = v
	}
	return srv
}

func plainAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// tlsSession dials, says EHLO, starts TLS and says EHLO again.
func (e *testEnv) tlsSession(t *testing.T, addr string) (*dialog, string) {
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.startTLS(&tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
	// Password hashing (bcrypt cost 14, as `caddy hash-password` makes)
	// takes seconds under the race detector on a busy machine.
	_ = d.conn.SetDeadline(time.Now().Add(5 * time.Minute))
	return d, d.cmd("EHLO client.example", "250")
}

func TestAuthOnlyOverTLS(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(authServer(t, nil))[0]
	d := dial(t, addr)
	d.expect("220")
	if ehlo := d.cmd("EHLO client.example", "250"); strings.Contains(ehlo, "AUTH") {
		t.Fatalf("AUTH advertised before TLS: %q", ehlo)
	}
	d.cmd("AUTH PLAIN "+plainAuth("alice@example.test", "s3cret"), "523 5.7.10")
	d2, ehlo := e.tlsSession(t, addr)
	if !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("AUTH not offered after TLS: %q", ehlo)
	}
	d2.cmd("AUTH PLAIN "+plainAuth("alice@example.test", "s3cret"), "235 2.7.0")
}

func TestAuthPlainAndLoginWithCaddyHashes(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(authServer(t, nil))[0]
	// PLAIN against a bcrypt hash.
	d, _ := e.tlsSession(t, addr)
	d.cmd("AUTH PLAIN "+plainAuth("alice@example.test", "s3cret"), "235 2.7.0")
	// Authenticated: any domain may be reached; the message goes outbound.
	d.cmd("MAIL FROM:<alice@example.test>", "250")
	d.cmd("RCPT TO:<friend@elsewhere.test>", "250")
	d.cmd("RSET", "250")
	d.cmd("MAIL FROM:<mallory@elsewhere.test>", "553 5.7.1")

	// LOGIN against an argon2id hash.
	d2, _ := e.tlsSession(t, addr)
	d2.cmd("AUTH LOGIN", "334 "+base64.StdEncoding.EncodeToString([]byte("Username:")))
	d2.cmd(base64.StdEncoding.EncodeToString([]byte("bob")), "334 "+base64.StdEncoding.EncodeToString([]byte("Password:")))
	d2.cmd(base64.StdEncoding.EncodeToString([]byte("s3cret")), "235 2.7.0")
	d2.cmd("MAIL FROM:<anyone@example.test>", "250") // bob may use @example.test
	d2.cmd("RCPT TO:<x@elsewhere.test>", "250")
	d2.cmd("RSET", "250")
	d2.cmd("MAIL FROM:<bob@elsewhere.test>", "553 5.7.1")

	// LOGIN with the username as initial response.
	d3, _ := e.tlsSession(t, addr)
	d3.cmd("AUTH LOGIN "+base64.StdEncoding.EncodeToString([]byte("bob")), "334 "+base64.StdEncoding.EncodeToString([]byte("Password:")))
	d3.cmd(base64.StdEncoding.EncodeToString([]byte("s3cret")), "235 2.7.0")
}

func TestAuthFailuresAndBruteForce(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(authServer(t, map[string]any{"max_auth_failures": 3}))[0]
	d, _ := e.tlsSession(t, addr)
	d.cmd("AUTH PLAIN "+plainAuth("alice@example.test", "wrong"), "535 5.7.8")
	d.cmd("AUTH PLAIN "+plainAuth("nobody", "wrong"), "535 5.7.8")
	d.cmd("AUTH PLAIN "+plainAuth("alice@example.test", "wrong"), "535 5.7.8")
	// The address is now blocked: even the right password is refused,
	// without being checked.
	d.cmd("AUTH PLAIN "+plainAuth("alice@example.test", "s3cret"), "454 4.7.0")
	// Unauthenticated, relaying stays closed.
	d.cmd("MAIL FROM:<alice@example.test>", "250")
	d.cmd("RCPT TO:<x@elsewhere.test>", "550 5.7.1")
}

func TestOpenRelayMatrix(t *testing.T) {
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": authServer(t, nil)},
	}))
	addr := addrsOf(app, "mx")[0]
	tricks := []string{
		"user@elsewhere.test",
		"USER@ELSEWHERE.TEST",
		"user@elsewhere.test.",
		"user%elsewhere.test@example.test",
		"user!elsewhere.test@example.test",
		"elsewhere.test!user@example.test",
		`"user@elsewhere.test"@example.test`,
		"@example.test:user@elsewhere.test",
		"user@elsewhere.test@example.test",
		"user@[127.0.0.1]",
		"user@[IPv6:::1]",
		"user@example.test.elsewhere.test",
		"user@elsewhere.test\x00@example.test",
	}
	d, _ := e.tlsSession(t, addr) // TLS but not authenticated
	for _, rcpt := range tricks {
		d.cmd("MAIL FROM:<probe@sender.test>", "250")
		d.send("RCPT TO:<%s>", rcpt)
		if r := d.reply(); strings.HasPrefix(r, "2") {
			t.Errorf("RCPT TO:<%q> accepted: %q", rcpt, r)
		}
		d.cmd("RSET", "250")
	}
	// What is ours is still accepted, whatever the case and trailing dot.
	d.cmd("MAIL FROM:<probe@sender.test>", "250")
	d.cmd("RCPT TO:<User@EXAMPLE.TEST>", "250")
	d.cmd("RCPT TO:<user@example.test.>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: ours\r\n\r\nx\r\n.\r\n")
	d.expect("250")
	for _, m := range app.TestQueue().Messages() {
		for _, r := range m.Recipients {
			if app.TestRouteFor(app.Servers["mx"], strings.ToLower(strings.TrimSuffix(r.Addr[strings.LastIndex(r.Addr, "@")+1:], "."))) == nil {
				t.Fatalf("mail queued for another domain: %s", r.Addr)
			}
		}
	}
}

func TestRelayNetworks(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"relay_networks": []string{"127.0.0.2/32"}})[0]
	outside := dial(t, addr) // from 127.0.0.1
	outside.expect("220")
	outside.cmd("EHLO client.example", "250")
	outside.cmd("MAIL FROM:<a@sender.test>", "250")
	outside.cmd("RCPT TO:<x@elsewhere.test>", "550 5.7.1")
	inside := dialFrom(t, "127.0.0.2", addr)
	inside.expect("220")
	inside.cmd("EHLO app.example", "250")
	inside.cmd("MAIL FROM:<a@sender.test>", "250")
	inside.cmd("RCPT TO:<x@elsewhere.test>", "250")
}

// dialFrom connects from a given loopback source address.
func dialFrom(t *testing.T, src, addr string) *dialog {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { c.Close() })
	return newDialog(t, c)
}

func TestPerIPConnectionLimits(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"max_connections_per_ip": 2, "connection_rate_per_ip": 5})[0]
	a1 := dialFrom(t, "127.0.0.1", addr)
	a1.expect("220")
	a2 := dialFrom(t, "127.0.0.1", addr)
	a2.expect("220")
	dialFrom(t, "127.0.0.1", addr).expect("421 4.7.0", "too many connections from your address")
	// Another client is still served.
	b := dialFrom(t, "127.0.0.2", addr)
	b.expect("220")
	b.cmd("EHLO other.example", "250")
	// Connection rate: 5 per minute from one address (three used above).
	a1.cmd("QUIT", "221")
	a2.cmd("QUIT", "221")
	eventually(t, "slots freed", func() bool {
		srv := runningApp(t).Servers["mx"]
		return srv.TestPerIP("127.0.0.1") == 0
	})
	dialFrom(t, "127.0.0.1", addr).expect("220")
	dialFrom(t, "127.0.0.1", addr).expect("220")
	dialFrom(t, "127.0.0.1", addr).expect("421 4.7.0", "per minute")
	dialFrom(t, "127.0.0.3", addr).expect("220")
}

func TestBadCommandsAndMessageLimits(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"max_bad_commands": 3, "max_messages_per_connection": 2})[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	for i := 0; i < 3; i++ {
		d.cmd("RCPT TO:<x@elsewhere.test>", "550 5.7.1")
	}
	d.cmd("RCPT TO:<x@elsewhere.test>", "421 4.7.0")
	assertClosed(t, d)

	d2 := dial(t, addr)
	d2.expect("220")
	d2.cmd("EHLO client.example", "250")
	for i := 0; i < 2; i++ {
		if r := d2.sendMail("a@sender.test", "u@example.test", "Subject: x\r\n\r\ny"); !strings.HasPrefix(r, "250") {
			t.Fatalf("message %d: %q", i, r)
		}
	}
	d2.cmd("MAIL FROM:<a@sender.test>", "421 4.7.0")
	assertClosed(t, d2)
}

// assertClosed checks that the server closed the connection.
func assertClosed(t *testing.T, d *dialog) {
	t.Helper()
	_ = d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := d.r.ReadString('\n'); err == nil {
		t.Fatalf("connection still open; read %q", line)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection not closed")
	}
}

func TestManyIdleConnectionsBoundedAndTimedOut(t *testing.T) {
	e := newTestEnv(t)
	const n = 2000
	addr := e.start(map[string]any{
		"read_timeout": "2s", "max_connections": 5000,
		"max_connections_per_ip": -1, "connection_rate_per_ip": -1,
	})[0]
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	before := heap()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		// Spread the clients over loopback addresses.
		src := net.IPv4(127, 0, byte(1+i/250), byte(1+i%250))
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	// Every connection is greeted (so it is being served), then idles.
	// Lines, not reads: on a slow machine the greeting of the first
	// connections and their 421 may arrive together.
	lines := make([]*bufio.Reader, len(conns))
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		lines[i] = bufio.NewReaderSize(c, 512)
		if line, err := lines[i].ReadString('\n'); err != nil || !strings.HasPrefix(line, "220") {
			t.Fatalf("connection %d: greeting %q, %v", i, line, err)
		}
	}
	perConn := (int64(heap()) - int64(before)) / n
	t.Logf("%d idle connections: %d bytes each (client and server side, this process)", n, perConn)
	if perConn > 64<<10 {
		t.Errorf("%d bytes per idle connection; want at most 64 KiB", perConn)
	}
	// All of them are closed by the server after the read timeout, with
	// 421 4.4.2.
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		line, err := lines[i].ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "421 4.4.2") {
			t.Fatalf("connection %d: got %q, %v; want 421 4.4.2 on idle timeout", i, line, err)
		}
	}
	eventually(t, "server released the connections", func() bool {
		srv := runningApp(t).Servers["mx"]
		return srv.TestConns() == 0
	})
}

// layer4Config adds a layer4 app with two servers in front of the smtp
// server "mx" (which has no listeners of its own): one speaks STARTTLS
// after a PROXY protocol header, one implicit TLS.
func layer4Config(t *testing.T, proxyAddr, implicitAddr string) func(map[string]any) {
	return func(c map[string]any) {
		c["apps"].(map[string]any)["layer4"] = map[string]any{"servers": map[string]any{
			"proxied": map[string]any{"listen": []string{proxyAddr}, "routes": []any{map[string]any{"handle": []any{
				map[string]any{"handler": "proxy_protocol", "allow": []string{"127.0.0.0/8"}, "timeout": "5s"},
				map[string]any{"handler": "smtp", "server": "mx"},
			}}}},
			"implicit": map[string]any{"listen": []string{implicitAddr}, "routes": []any{map[string]any{"handle": []any{
				map[string]any{"handler": "smtp", "server": "mx", "tls": "implicit"},
			}}}},
		}}
	}
}

func TestLayer4ProxyProtocolAndImplicitTLS(t *testing.T) {
	e := newTestEnv(t)
	proxyAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	implicitAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	srv := authServer(t, nil)
	delete(srv, "listen")
	e.load(e.config(map[string]any{"servers": map[string]any{"mx": srv}}, layer4Config(t, proxyAddr, implicitAddr)))
	waitForPort(t, proxyAddr)

	for _, version := range []byte{1, 2} {
		c, err := net.Dial("tcp", proxyAddr)
		if err != nil {
			t.Fatal(err)
		}
		client := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000 + int(version)}
		hdr := proxyproto.HeaderProxyFromAddrs(version, client, &net.TCPAddr{IP: net.ParseIP("192.0.2.25"), Port: 25})
		if _, err := hdr.WriteTo(c); err != nil {
			t.Fatal(err)
		}
		d := newDialog(t, c)
		t.Cleanup(func() { c.Close() })
		d.expect("220 " + testHost)
		d.cmd("EHLO proxied.example", "STARTTLS")
		local := fmt.Sprintf("v%d", version)
		if r := d.sendMail("a@sender.test", local+"@example.test", "Subject: proxied\r\n\r\nx"); !strings.HasPrefix(r, "250") {
			t.Fatalf("PROXY v%d: %q", version, r)
		}
		data, err := os.ReadFile(e.waitMail("example.test", local, 1)[0])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "Received: from proxied.example ([203.0.113.7])") {
			t.Fatalf("PROXY v%d: the session did not see the real client address:\n%s", version, data)
		}
	}

	d := dialTLS(t, implicitAddr, &tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
	d.expect("220 " + testHost)
	ehlo := d.cmd("EHLO client.example", "AUTH PLAIN LOGIN")
	if strings.Contains(ehlo, "STARTTLS") {
		t.Fatalf("STARTTLS offered inside implicit TLS via layer4: %q", ehlo)
	}
	d.cmd("AUTH PLAIN "+plainAuth("alice@example.test", "s3cret"), "235 2.7.0")
}
