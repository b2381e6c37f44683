package smtpapp_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEHLOAdvertisesSTARTTLSAndSize(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"max_message_size": 1048576})[0]
	d := dial(t, addr)
	d.expect("220 " + testHost + " ESMTP")
	got := d.cmd("EHLO client.example", "250-STARTTLS", "SIZE 1048576", "PIPELINING", "8BITMIME", "SMTPUTF8", "CHUNKING", "DSN", "ENHANCEDSTATUSCODES")
	if strings.Contains(got, "AUTH") {
		t.Errorf("AUTH advertised before TLS: %q", got)
	}
	if strings.Contains(got, "REQUIRETLS") {
		t.Errorf("REQUIRETLS advertised before TLS: %q", got)
	}
}

func TestSTARTTLSCertificateFromInternalCA(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{})[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "STARTTLS")
	st := d.startTLS(&tls.Config{ServerName: testHost, RootCAs: e.rootPool(), NextProtos: []string{"h2", "http/1.1"}})
	if st.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x, want >= 1.2", st.Version)
	}
	if st.NegotiatedProtocol != "" {
		t.Errorf("ALPN %q negotiated; an SMTP server must not pick h2", st.NegotiatedProtocol)
	}
	if len(st.VerifiedChains) == 0 {
		t.Fatal("no verified chain")
	}
	// After STARTTLS the session starts over: EHLO again, now with REQUIRETLS
	// and without STARTTLS.
	got := d.cmd("EHLO client.example", "250", "REQUIRETLS")
	if strings.Contains(got, "STARTTLS") {
		t.Errorf("STARTTLS offered inside TLS: %q", got)
	}
	if r := d.sendMail("a@sender.example", "rcpt@example.test", "Subject: hi\r\n\r\nbody"); !strings.HasPrefix(r, "250 2.0.0") {
		t.Fatalf("DATA reply %q", r)
	}
	e.waitMail("example.test", "rcpt", 1)
}

func TestImplicitTLSListener(t *testing.T) {
	e := newTestEnv(t)
	addrs := e.start(map[string]any{"listen": []any{
		map[string]any{"address": "127.0.0.1:0"},
		map[string]any{"address": "127.0.0.2:0", "tls": "implicit"},
	}})
	if len(addrs) != 2 || addrs[0] == addrs[1] {
		t.Fatalf("addresses %v", addrs)
	}
	d := dialTLS(t, addrs[1], &tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
	d.expect("220 " + testHost)
	got := d.cmd("EHLO client.example", "250", "REQUIRETLS")
	if strings.Contains(got, "STARTTLS") {
		t.Errorf("STARTTLS offered on an implicit TLS listener: %q", got)
	}
	if r := d.sendMail("a@sender.example", "b@example.test", "Subject: x\r\n\r\nbody"); !strings.HasPrefix(r, "250") {
		t.Fatalf("DATA reply %q", r)
	}
}

func TestNoSNIGetsHostnameCertificate(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{})[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "STARTTLS")
	roots := e.rootPool()
	// An empty ServerName sends no SNI; verify the chain for the hostname
	// ourselves.
	st := d.startTLS(&tls.Config{
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.ServerName != "" {
				return errors.New("client sent SNI")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: testHost, Roots: roots, Intermediates: inter})
			return err
		},
	})
	if got := st.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != testHost {
		t.Fatalf("certificate names %v, want [%s]", got, testHost)
	}
}

// ticketCache records whether the server ever issued a session ticket.
type ticketCache struct {
	mu   sync.Mutex
	puts int
}

func (c *ticketCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (c *ticketCache) Put(_ string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.mu.Lock()
		c.puts++
		c.mu.Unlock()
	}
}

func TestNoSessionTickets(t *testing.T) {
	e := newTestEnv(t)
	addrs := e.start(map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "implicit"}}})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := &ticketCache{}
		d := dialTLS(t, addrs[0], &tls.Config{ServerName: testHost, RootCAs: e.rootPool(), MinVersion: v, MaxVersion: v, ClientSessionCache: cache})
		// TLS 1.3 tickets arrive after the handshake: read past them.
		d.expect("220")
		d.cmd("NOOP", "250")
		d.cmd("QUIT", "221")
		cache.mu.Lock()
		puts := cache.puts
		cache.mu.Unlock()
		if puts != 0 {
			t.Errorf("TLS %x: server issued %d session tickets", v, puts)
		}
	}
}

func TestRequireTLS(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"require_tls": true})[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "STARTTLS")
	d.cmd("MAIL FROM:<a@sender.example>", "530 5.7.0")
	d.startTLS(&tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.example>", "250")
}

func TestRelayDenied(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{})[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.cmd("MAIL FROM:<a@sender.example>", "250")
	d.cmd("RCPT TO:<victim@elsewhere.example>", "550 5.7.1")
	d.cmd("RCPT TO:<victim@example.test.elsewhere.example>", "550 5.7.1")
	d.cmd("RCPT TO:<ok@EXAMPLE.TEST>", "250")
	d.cmd("RCPT TO:<user@>", "501 5.5.2")
	d.cmd("RCPT TO:<user\x01@example.test>", "553 5.1.3")
}

var receivedRE = regexp.MustCompile(`^Return-Path: <a@sender\.example>\r\n` +
	`Delivered-To: rcpt@example\.test\r\n` +
	`Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n` +
	`\t\(using TLSv1\.3 with cipher TLS_[A-Z0-9_]+\)\r\n` +
	`\tby ` + regexp.QuoteMeta(testHost) + ` \(caddy-smtp\) with ESMTPS id ([A-Z2-7]{16})\r\n` +
	`\tfor <rcpt@example\.test>; [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}\r\n` +
	`Subject: hello\r\n\r\nbody line\r\n$`)

func TestReceivedHeader(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{})[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.startTLS(&tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
	d.cmd("EHLO client.example", "250")
	r := d.sendMail("a@sender.example", "rcpt@example.test", "Subject: hello\r\n\r\nbody line")
	files := e.waitMail("example.test", "rcpt", 1)
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	m := receivedRE.FindStringSubmatch(string(data))
	if m == nil {
		t.Fatalf("delivered message does not match:\n%q", data)
	}
	if !strings.HasSuffix(r, "queued as "+m[1]) {
		t.Errorf("reply %q does not name the id %s of the Received header", r, m[1])
	}
	// Plaintext: ESMTP and no "using" clause.
	d2 := dial(t, addr)
	d2.expect("220")
	d2.cmd("EHLO plain.example", "250")
	d2.sendMail("a@sender.example", "plain@example.test", "Subject: p\r\n\r\nx")
	files = e.waitMail("example.test", "plain", 1)
	data, _ = os.ReadFile(files[0])
	if !strings.Contains(string(data), "Received: from plain.example ([127.0.0.1])\r\n\tby "+testHost+" (caddy-smtp) with ESMTP id ") {
		t.Errorf("plaintext Received header wrong:\n%q", data)
	}
}

func TestSmugglingPayloadsRejected(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{})[0]
	payloads := map[string]string{
		"LF dot LF":      "Subject: a\r\n\r\nhello\n.\nMAIL FROM:<x@evil.example>\r\nRCPT TO:<y@example.test>\r\nDATA\r\nsmuggled",
		"CR dot CR":      "Subject: a\r\n\r\nhello\r.\rMAIL FROM:<x@evil.example>",
		"bare LF line":   "Subject: a\r\n\r\nline one\nline two",
		"bare CR":        "Subject: a\r\n\r\nline one\rline two",
		"CRLF dot LF":    "Subject: a\r\n\r\nhello\r\n.\nMAIL FROM:<x@evil.example>",
		"LF dot CRLF":    "Subject: a\r\n\r\nhello\n.\r\nmore",
		"trailing bare":  "Subject: a\r\n\r\nlast\n",
		"header bare LF": "Subject: a\nX: b\r\n\r\nbody",
	}
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	for name, p := range payloads {
		r := d.sendMail("a@sender.example", "smuggle@example.test", p)
		if !strings.HasPrefix(r, "550 5.6.0") {
			t.Errorf("%s: reply %q, want 550 5.6.0", name, r)
		}
		// The connection stays usable.
		d.cmd("NOOP", "250")
	}
	// BDAT carries raw bytes: the same check applies.
	d.cmd("MAIL FROM:<a@sender.example>", "250")
	d.cmd("RCPT TO:<smuggle@example.test>", "250")
	chunk := "Subject: b\r\n\r\nx\n.\ny\r\n"
	d.send("BDAT %d LAST", len(chunk))
	d.raw(chunk)
	d.expect("550 5.6.0")
	// A clean message after all that still goes through, and it is the
	// only one delivered.
	if r := d.sendMail("a@sender.example", "smuggle@example.test", "Subject: ok\r\n\r\nfine"); !strings.HasPrefix(r, "250") {
		t.Fatalf("clean message: %q", r)
	}
	e.waitMail("example.test", "smuggle", 1)
	assertNoSpoolLeftovers(t, e.spool)
}

func TestBDATAndSizeLimit(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"max_message_size": 2000})[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "SIZE 2000")
	d.cmd("MAIL FROM:<a@sender.example> SIZE=5000", "552 5.3.4")
	d.cmd("MAIL FROM:<a@sender.example>", "250")
	d.cmd("RCPT TO:<big@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 200) + ".\r\n")
	d.expect("552 5.3.4")
	d.cmd("MAIL FROM:<a@sender.example>", "250")
	d.cmd("RCPT TO:<chunks@example.test>", "250")
	d.send("BDAT 14")
	d.raw("Subject: c\r\n\r\n")
	d.expect("250")
	d.send("BDAT 6 LAST")
	d.raw("hello\r")
	d.expect("550 5.6.0") // bare CR at the very end
	d.cmd("MAIL FROM:<a@sender.example>", "250")
	d.cmd("RCPT TO:<chunks@example.test>", "250")
	d.send("BDAT 21 LAST")
	d.raw("Subject: c\r\n\r\nhello\r\n")
	d.expect("250 2.0.0")
	e.waitMail("example.test", "chunks", 1)
	if n := len(e.mailFiles("example.test", "big")); n != 0 {
		t.Fatalf("oversized message delivered")
	}
}

func TestQueueFailureAnswers451(t *testing.T) {
	e := newTestEnv(t)
	// The failures are injected through the files spool's directories;
	// the reply mapping does not depend on the spool format.
	app := e.load(e.config(map[string]any{
		"queue":   map[string]any{"path": e.spool, "store": "files"},
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
	}))
	addr := addrsOf(app, "mx")[0]
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	// The spool's tmp/ directory replaced by a file: creating the message
	// fails, even for root. A local failure answers 451, never 5xx.
	tmp := filepath.Join(e.spool, "tmp")
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := d.sendMail("a@sender.example", "ok@example.test", "Subject: x\r\n\r\ny"); !strings.HasPrefix(r, "451 4.3.0") {
		t.Fatalf("reply %q, want 451 4.3.0", r)
	}
	d.cmd("NOOP", "250")
	// Committing fails after the body was written (msg/ replaced by a
	// file): 451, and the half-written body is gone.
	os.Remove(tmp)
	os.Mkdir(tmp, 0o700)
	msgDir := filepath.Join(e.spool, "msg")
	os.RemoveAll(msgDir)
	os.WriteFile(msgDir, nil, 0o600)
	if r := d.sendMail("a@sender.example", "ok@example.test", "Subject: x\r\n\r\ny"); !strings.HasPrefix(r, "451 4.3.0") {
		t.Fatalf("reply %q, want 451 4.3.0", r)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("half-written files left in the spool: %v", left)
	}
	if n := len(e.mailFiles("example.test", "ok")); n != 0 {
		t.Fatalf("message delivered although it was refused")
	}
	// Repair the spool so that it can be closed and checked at the end.
	os.Remove(msgDir)
	os.Mkdir(msgDir, 0o700)
}

func TestTargetFailureKeepsMessageQueued(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{})[0]
	// The recipient's maildir has a regular file where new/ must be: the
	// rename into new/ fails even for root, after tmp/ was written.
	broken := filepath.Join(e.mail, "example.test", "broken")
	if err := os.MkdirAll(filepath.Join(broken, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "new"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	if r := d.sendMail("a@sender.example", "broken@example.test", "Subject: x\r\n\r\ny"); !strings.HasPrefix(r, "250") {
		t.Fatalf("reply %q, want 250 (queued)", r)
	}
	app := runningApp(t)
	// Several attempts fail; the message stays queued and tmp/ stays clean.
	eventually(t, "two failed attempts", func() bool {
		msgs := app.TestQueue().Messages()
		return len(msgs) == 1 && msgs[0].Attempts >= 2
	})
	if n := app.TestQueue().Len(); n != 1 {
		t.Fatalf("queue holds %d messages, want 1", n)
	}
	if left, _ := os.ReadDir(filepath.Join(broken, "tmp")); len(left) != 0 {
		t.Errorf("half-written files left in tmp/: %v", left)
	}
	// Repaired, the next retry delivers it.
	os.Remove(filepath.Join(broken, "new"))
	e.waitMail("example.test", "broken", 1)
	eventually(t, "empty queue", func() bool { return app.TestQueue().Len() == 0 })
}

func assertNoSpoolLeftovers(t *testing.T, spool string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(spool, "tmp", "*"))
	if len(left) != 0 {
		t.Errorf("spool files left behind: %v", left)
	}
}

func TestMaxConnections(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{"max_connections": 2})[0]
	d1 := dial(t, addr)
	d1.expect("220")
	d2 := dial(t, addr)
	d2.expect("220")
	d3 := dial(t, addr)
	d3.expect("421 4.7.0")
	// When one leaves, a new client is served again.
	d1.cmd("QUIT", "221")
	deadline := time.Now().Add(5 * time.Second)
	for {
		d4 := dial(t, addr)
		if r := d4.reply(); strings.HasPrefix(r, "220") {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("still refused after a slot was freed: %q", r)
		}
	}
	d2.cmd("NOOP", "250")
}

// TestReuseCertificateKeys: with reuse_certificate_keys the policy that
// manages the server's certificate keeps its key across renewals (what a
// published TLSA 3 1 1 record needs); without it, a new key each time.
func TestReuseCertificateKeys(t *testing.T) {
	for _, reuse := range []bool{true, false} {
		e := newTestEnv(t)
		app := e.load(e.config(map[string]any{
			"reuse_certificate_keys": reuse,
			"servers":                map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
		}))
		ap := app.TestPolicyFor(testHost)
		if ap == nil || ap.ReusePrivateKeys != reuse {
			t.Errorf("reuse %v: policy %+v", reuse, ap)
		}
	}
}
