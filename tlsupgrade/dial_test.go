package tlsupgrade

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const localName = "gw.example"

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSTARTTLSVerified(t *testing.T) {
	for _, tc := range []struct {
		maxVersion uint16
		version    string
	}{
		{tls.VersionTLS13, "TLSv1.3"},
		{tls.VersionTLS12, "TLSv1.2"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			checkLeaks(t)
			ca := newTestCA(t)
			cfg := serverTLS(ca.valid(t, "mx.test"))
			cfg.MaxVersion = tc.maxVersion
			ts := startServer(t, cfg, false)

			c, err := Dial(testContext(t), ts.addr, Options{
				LocalName:  localName,
				ServerName: "mx.test.", // as it comes out of an MX record
				RootCAs:    ca.pool,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(c.Result.Cipher, "TLS_") {
				t.Errorf("Cipher = %q", c.Result.Cipher)
			}
			want := Result{
				Level:    LevelOpportunistic,
				Policy:   "opportunistic",
				Offered:  true,
				TLS:      true,
				Version:  tc.version,
				Cipher:   c.Result.Cipher,
				Verified: true,
				PeerName: "mx.test",
			}
			if c.Result != want {
				t.Errorf("Result = %+v\nwant     %+v", c.Result, want)
			}
			cs, ok := c.TLSConnectionState()
			if !ok || cs.ServerName != "mx.test" || cs.Version != tc.maxVersion {
				t.Errorf("TLSConnectionState = SNI %q, version %x, %v", cs.ServerName, cs.Version, ok)
			}
			if ok, _ := c.Client.Extension("STARTTLS"); ok {
				t.Error("the EHLO over TLS still advertises STARTTLS: the client kept the plaintext EHLO reply")
			}
			deliver(t, c)

			sessions, msgs := ts.be.snapshot()
			wantSessions := []sessionInfo{{localName, false}, {localName, true}}
			if !reflect.DeepEqual(sessions, wantSessions) {
				t.Errorf("server sessions = %+v, want %+v", sessions, wantSessions)
			}
			if len(msgs) != 1 || msgs[0].From != "sender@src.test" || !strings.Contains(msgs[0].Data, "hello") {
				t.Errorf("messages = %+v", msgs)
			}
			ts.wantDelivered(t, true, 1)
		})
	}
}

func TestSTARTTLSUnverified(t *testing.T) {
	ca := newTestCA(t)
	var noCA *testCA
	now := time.Now()
	for _, tc := range []struct {
		name       string
		cert       tls.Certificate
		serverName string
		noRoots    bool
		level      Level
		wantErr    string
	}{
		{"self-signed", noCA.issue(t, []string{"mx.test"}, now.Add(-time.Hour), now.Add(time.Hour)), "mx.test", false, "", "unknown authority"},
		{"wrong name", ca.valid(t, "other.test"), "mx.test", false, "", "not mx.test"},
		{"expired", ca.issue(t, []string{"mx.test"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour)), "mx.test", false, "", "expired"},
		{"system roots", ca.valid(t, "mx.test"), "mx.test", true, "", "x509:"},
		{"no server name", ca.valid(t, "mx.test"), "", false, "", errNoServerName.Error()},
		{"required self-signed", noCA.issue(t, []string{"mx.test"}, now.Add(-time.Hour), now.Add(time.Hour)), "mx.test", false, LevelRequired, "unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			ts := startServer(t, serverTLS(tc.cert), false)
			opts := Options{LocalName: localName, ServerName: tc.serverName, RootCAs: ca.pool, Policy: Policy{Level: tc.level}}
			if tc.noRoots {
				opts.RootCAs = nil
			}
			c, err := Dial(testContext(t), ts.addr, opts)
			if err != nil {
				t.Fatal(err)
			}
			r := c.Result
			if !r.TLS || r.Verified || !strings.Contains(r.VerifyError, tc.wantErr) || r.PeerName == "" || r.Fallback != "" {
				t.Errorf("Result = %+v, want TLS, not verified, VerifyError containing %q", r, tc.wantErr)
			}
			deliver(t, c)
			ts.wantDelivered(t, true, 1)
		})
	}
}

func TestSTARTTLSNotOffered(t *testing.T) {
	t.Run("opportunistic", func(t *testing.T) {
		checkLeaks(t)
		ts := startServer(t, nil, false)
		c, err := Dial(testContext(t), ts.addr, Options{LocalName: localName, ServerName: "mx.test"})
		if err != nil {
			t.Fatal(err)
		}
		want := Result{Level: LevelOpportunistic, Policy: "opportunistic", Fallback: "starttls not offered"}
		if c.Result != want {
			t.Errorf("Result = %+v, want %+v", c.Result, want)
		}
		if _, ok := c.TLSConnectionState(); ok {
			t.Error("TLSConnectionState reports TLS")
		}
		deliver(t, c)
		if sessions, _ := ts.be.snapshot(); !reflect.DeepEqual(sessions, []sessionInfo{{localName, false}}) {
			t.Errorf("sessions = %+v", sessions)
		}
		ts.wantDelivered(t, false, 1)
	})
	t.Run("required", func(t *testing.T) {
		checkLeaks(t)
		ts := startServer(t, nil, false)
		_, err := Dial(testContext(t), ts.addr, Options{LocalName: localName, Policy: Policy{Level: LevelRequired}})
		de := dialError(t, err, StageSTARTTLS)
		if !errors.Is(err, ErrSTARTTLSNotOffered) || !de.Temporary || !IsTemporary(err) {
			t.Errorf("err = %v (temporary %v), want ErrSTARTTLSNotOffered, temporary", err, de.Temporary)
		}
		if want := "tlsupgrade: " + ts.addr + ": starttls: STARTTLS not offered"; err.Error() != want {
			t.Errorf("err = %q, want %q", err, want)
		}
		ts.wantNothing(t, 1)
	})
}

func TestHandshakeFailure(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.valid(t, "mx.test")
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"TLS 1.1 only", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}},
		{"certificate error", &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, errors.New("no certificate today")
		}}},
	} {
		t.Run(tc.name+"/opportunistic", func(t *testing.T) {
			checkLeaks(t)
			ts := startServer(t, tc.cfg, false)
			c, err := Dial(testContext(t), ts.addr, Options{LocalName: localName, ServerName: "mx.test", RootCAs: ca.pool})
			if err != nil {
				t.Fatal(err)
			}
			r := c.Result
			if r.TLS || !r.Offered || r.Verified || r.Version != "" || !strings.HasPrefix(r.Fallback, "handshake failed: ") {
				t.Errorf("Result = %+v, want plaintext after a failed handshake", r)
			}
			t.Logf("Fallback: %s", r.Fallback)
			deliver(t, c)
			ts.wantDelivered(t, false, 2) // the second connection in plaintext
			if n := ts.startTLS.Load(); n != 1 {
				t.Errorf("%d STARTTLS commands, want 1", n)
			}
		})
		t.Run(tc.name+"/required", func(t *testing.T) {
			checkLeaks(t)
			ts := startServer(t, tc.cfg, false)
			_, err := Dial(testContext(t), ts.addr, Options{LocalName: localName, ServerName: "mx.test", Policy: Policy{Level: LevelRequired}})
			de := dialError(t, err, StageHandshake)
			if !de.Temporary {
				t.Error("not temporary")
			}
			ts.wantNothing(t, 1)
		})
	}
}

func TestSTARTTLSRefused(t *testing.T) {
	ca := newTestCA(t)
	t.Run("opportunistic", func(t *testing.T) {
		checkLeaks(t)
		ts := startServer(t, serverTLS(ca.valid(t, "mx.test")), true)
		c, err := Dial(testContext(t), ts.addr, Options{LocalName: localName, ServerName: "mx.test"})
		if err != nil {
			t.Fatal(err)
		}
		want := Result{Level: LevelOpportunistic, Policy: "opportunistic", Offered: true, Fallback: "starttls refused: 454 4.7.0 TLS not available due to temporary reason"}
		if c.Result != want {
			t.Errorf("Result = %+v\nwant     %+v", c.Result, want)
		}
		deliver(t, c)
		ts.wantDelivered(t, false, 1) // plaintext on the same connection
	})
	t.Run("required", func(t *testing.T) {
		checkLeaks(t)
		ts := startServer(t, serverTLS(ca.valid(t, "mx.test")), true)
		_, err := Dial(testContext(t), ts.addr, Options{LocalName: localName, Policy: Policy{Level: LevelRequired}})
		dialError(t, err, StageSTARTTLS)
		se, ok := errors.AsType[*smtp.SMTPError](err)
		if !ok || se.Code != 454 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 0}) || !IsTemporary(err) {
			t.Errorf("err = %v, want a temporary 454 4.7.0", err)
		}
		if !strings.HasSuffix(err.Error(), ": starttls: 454 4.7.0 TLS not available due to temporary reason") {
			t.Errorf("err = %q", err)
		}
		ts.wantNothing(t, 1)
	})
}

func TestLevelNone(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	ts := startServer(t, serverTLS(ca.valid(t, "mx.test")), false)
	c, err := Dial(testContext(t), ts.addr, Options{LocalName: localName, Policy: Policy{Level: LevelNone}})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Level: LevelNone, Policy: "none", Offered: true, Fallback: "tls disabled by policy"}
	if c.Result != want {
		t.Errorf("Result = %+v, want %+v", c.Result, want)
	}
	deliver(t, c)
	if n := ts.startTLS.Load(); n != 0 {
		t.Errorf("client sent STARTTLS %d times", n)
	}
	ts.wantDelivered(t, false, 1)
}

// TestServerNameFromAddr dials a name through a custom DialContext: the name
// becomes SNI and the name the certificate is checked against.
func TestServerNameFromAddr(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	ts := startServer(t, serverTLS(ca.valid(t, "mx.test")), false)
	var dialled string
	c, err := Dial(testContext(t), "mx.test:25", Options{
		LocalName: localName,
		RootCAs:   ca.pool,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialled = addr
			var d net.Dialer
			return d.DialContext(ctx, network, ts.addr)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if dialled != "mx.test:25" || !c.Result.Verified {
		t.Errorf("dialled %q, Result %+v", dialled, c.Result)
	}
}

func TestDialErrors(t *testing.T) {
	refused := freeAddr(t)
	for _, tc := range []struct {
		name     string
		greeting string // "" for a server that never speaks
		reply    func(n int, line string) string
		opts     Options
		timeout  time.Duration // of the context
		stage    string
		code     int
		check    func(t *testing.T, err error)
	}{
		{
			name: "greeting 554", greeting: "554 5.7.1 no SMTP service here\r\n",
			stage: StageGreeting, code: 554,
			check: func(t *testing.T, err error) {
				if !strings.HasSuffix(err.Error(), ": greeting: 554 5.7.1 no SMTP service here") {
					t.Errorf("err = %q", err)
				}
			},
		},
		{
			name: "greeting 421", greeting: "421-mx.test busy\r\n421 4.3.2 try again later\r\n",
			stage: StageGreeting, code: 421,
		},
		{
			name: "connection refused", stage: StageDial,
			check: func(t *testing.T, err error) {
				if !errors.Is(err, syscall.ECONNREFUSED) {
					t.Errorf("err = %v, want ECONNREFUSED", err)
				}
			},
		},
		{
			name: "never greets, context", timeout: 300 * time.Millisecond, stage: StageGreeting,
			check: func(t *testing.T, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err = %v, want context.DeadlineExceeded", err)
				}
			},
		},
		{
			name: "never greets, command timeout", opts: Options{CommandTimeout: 300 * time.Millisecond}, stage: StageGreeting,
			check: func(t *testing.T, err error) {
				if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
					t.Errorf("err = %v, want a timeout", err)
				}
			},
		},
		{
			name: "EHLO unanswered", greeting: "220 mx.test ESMTP\r\n",
			reply: func(int, string) string { return "" },
			opts:  Options{CommandTimeout: 300 * time.Millisecond}, stage: StageEHLO,
		},
		{
			name: "EHLO rejected", greeting: "220 mx.test ESMTP\r\n",
			reply: func(int, string) string { return "550 5.7.1 go away\r\n" },
			stage: StageEHLO, code: 550,
		},
		{
			name: "closed after STARTTLS, required", greeting: "220 mx.test ESMTP\r\n",
			reply: func(_ int, line string) string {
				if line == "STARTTLS" {
					return "close"
				}
				return "250-mx.test\r\n250 STARTTLS\r\n"
			},
			opts:  Options{Policy: Policy{Level: LevelRequired}},
			stage: StageSTARTTLS,
		},
		{
			name: "plaintext retry fails", greeting: "220 mx.test ESMTP\r\n",
			reply: func(n int, line string) string {
				switch {
				case n == 2:
					return "550 5.7.1 go away\r\n"
				case line == "STARTTLS":
					return "close"
				}
				return "250-mx.test\r\n250 STARTTLS\r\n"
			},
			stage: StageEHLO, code: 550,
			check: func(t *testing.T, err error) {
				de, _ := errors.AsType[*DialError](err)
				if de.Fallback != "starttls failed: EOF" || !strings.Contains(err.Error(), "ehlo (plaintext retry after starttls failed: EOF): 550 5.7.1 go away") {
					t.Errorf("err = %q, Fallback %q", err, de.Fallback)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			addr := refused
			if tc.stage != StageDial {
				addr = startScript(t, tc.greeting, tc.reply).addr
			}
			ctx := testContext(t)
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			opts := tc.opts
			opts.LocalName = localName
			start := time.Now()
			c, err := Dial(ctx, addr, opts)
			if err == nil {
				c.Close()
			}
			de := dialError(t, err, tc.stage)
			if !de.Temporary || !IsTemporary(err) {
				t.Errorf("err = %v: not temporary", err)
			}
			if tc.code != 0 {
				if se, ok := errors.AsType[*smtp.SMTPError](err); !ok || se.Code != tc.code {
					t.Errorf("err = %v, want reply code %d", err, tc.code)
				}
			}
			if tc.check != nil {
				tc.check(t, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Dial took %v", d)
			}
			t.Logf("err: %v", err)
		})
	}
}

// TestHandoverKeepsBufferedBytes: a server answers the first EHLO twice in
// one write. The second reply is in Dial's read buffer when the session is
// handed over, and must reach go-smtp's client as the reply to its EHLO.
func TestHandoverKeepsBufferedBytes(t *testing.T) {
	checkLeaks(t)
	ss := startScript(t, "220 mx.test ESMTP\r\n", func(_ int, line string) string {
		switch {
		case strings.HasPrefix(line, "EHLO") && !strings.Contains(line, "again"):
			// reply to this EHLO and, early, to the next one
			return "250-mx.test\r\n250 PIPELINING\r\n250-mx.test again\r\n250 8BITMIME\r\n"
		case strings.HasPrefix(line, "EHLO"):
			return "" // answered already
		case line == "NOOP":
			return "250 2.0.0 ok\r\n"
		}
		return "500 5.5.2 what?\r\n"
	})
	c, err := Dial(testContext(t), ss.addr, Options{LocalName: localName, CommandTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Client.Extension("8BITMIME"); !ok {
		t.Error("the client did not get the buffered EHLO reply")
	}
	if err := c.Client.Noop(); err != nil {
		t.Errorf("NOOP: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestHELOFallback: a server that knows only HELO.
func TestHELOFallback(t *testing.T) {
	checkLeaks(t)
	ss := startScript(t, "220 old.test SMTP\r\n", func(_ int, line string) string {
		switch {
		case strings.HasPrefix(line, "EHLO"):
			return "502 5.5.1 command not implemented\r\n"
		case line == "HELO "+localName:
			return "250 old.test\r\n"
		}
		return "500 5.5.2 what?\r\n"
	})
	c, err := Dial(testContext(t), ss.addr, Options{LocalName: localName})
	if err != nil {
		t.Fatal(err)
	}
	if c.Result.Fallback != fallbackNotOffered {
		t.Errorf("Result = %+v", c.Result)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestDataAfterSTARTTLSReply: a server (or a man in the middle) that puts
// plaintext after its 220 reply to STARTTLS. The bytes must not be taken for
// a reply inside TLS; opportunistic gives up on TLS and reconnects.
func TestDataAfterSTARTTLSReply(t *testing.T) {
	script := func(_ int, line string) string {
		switch {
		case strings.HasPrefix(line, "EHLO"):
			return "250-mx.test\r\n250 STARTTLS\r\n"
		case line == "STARTTLS":
			return "220 2.0.0 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n"
		}
		return "500 5.5.2 what?\r\n"
	}
	t.Run("opportunistic", func(t *testing.T) {
		checkLeaks(t)
		ss := startScript(t, "220 mx.test ESMTP\r\n", script)
		c, err := Dial(testContext(t), ss.addr, Options{LocalName: localName})
		if err != nil {
			t.Fatal(err)
		}
		if r := c.Result; r.TLS || !strings.HasPrefix(r.Fallback, "starttls failed: server sent") {
			t.Errorf("Result = %+v", r)
		}
		if ok, _ := c.Client.Extension("AUTH"); ok {
			t.Error("the injected reply reached the client")
		}
		if n := ss.accepts.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Run("required", func(t *testing.T) {
		checkLeaks(t)
		ss := startScript(t, "220 mx.test ESMTP\r\n", script)
		_, err := Dial(testContext(t), ss.addr, Options{LocalName: localName, Policy: Policy{Level: LevelRequired}})
		dialError(t, err, StageSTARTTLS)
	})
}

// TestContextEndsSession: the context of Dial bounds the session.
func TestContextEndsSession(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	ts := startServer(t, serverTLS(ca.valid(t, "mx.test")), false)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Dial(ctx, ts.addr, Options{LocalName: localName})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for c.Client.Noop() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the session outlived its context")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
}

func TestDialCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Dial(ctx, freeAddr(t), Options{LocalName: localName})
	dialError(t, err, StageDial)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func TestCloseTwice(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t, nil, false)
	c, err := Dial(testContext(t), ts.addr, Options{LocalName: localName})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Quit(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.Close(); err != nil {
			t.Errorf("Close after Quit: %v", err)
		}
	}
}

func TestOptionsErrors(t *testing.T) {
	for _, opts := range []Options{
		{},
		{LocalName: "gw example"},
		{LocalName: "gw.example\r\nRSET"},
		{LocalName: localName, Policy: Policy{Level: "secure"}},
		{LocalName: localName, Policy: Policy{Level: LevelMTASTS}},
		{LocalName: localName, Policy: Policy{Level: LevelMTASTS, MTASTS: &MTASTSPolicy{Version: "STSv1", Mode: MTASTSNone}}},
		{LocalName: localName, Policy: Policy{Level: LevelDANE}},
	} {
		_, err := Dial(context.Background(), "127.0.0.1:25", opts)
		de := dialError(t, err, StageOptions)
		if de.Temporary || IsTemporary(err) {
			t.Errorf("%+v: %v is temporary", opts, err)
		}
	}
}

func BenchmarkDialSTARTTLS(b *testing.B) {
	ca := newTestCA(b)
	ts := startServer(b, serverTLS(ca.valid(b, "mx.test")), false)
	ctx := context.Background()
	opts := Options{LocalName: localName, ServerName: "mx.test", RootCAs: ca.pool}
	b.ReportAllocs()
	for b.Loop() {
		c, err := Dial(ctx, ts.addr, opts)
		if err != nil {
			b.Fatal(err)
		}
		if !c.Result.TLS || !c.Result.Verified {
			b.Fatalf("Result = %+v", c.Result)
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// startImplicitServer starts a go-smtp server that speaks TLS from the
// first byte, as on port 465.
func startImplicitServer(t *testing.T, cert tls.Certificate) *testServer {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS(cert))
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: l.Addr().String(), be: &backend{}}
	s := smtp.NewServer(ts.be)
	s.Domain = "mx.test"
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(l) }()
	t.Cleanup(func() { s.Close(); l.Close(); <-done })
	return ts
}

// TestImplicitTLS: with ImplicitTLS the handshake comes first (no
// STARTTLS, no plaintext ever); at verify an untrusted certificate and a
// plaintext server are errors, at required the untrusted certificate is
// only recorded; levels that allow plaintext are refused.
func TestImplicitTLS(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	good := startImplicitServer(t, ca.valid(t, "relay.test"))
	c, err := Dial(testContext(t), good.addr, Options{LocalName: localName, ServerName: "relay.test", RootCAs: ca.pool,
		Policy: Policy{Level: LevelVerify}, ImplicitTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Result; !r.TLS || !r.Implicit || !r.Verified || r.Offered || r.Version == "" {
		t.Errorf("Result = %+v", r)
	}
	deliver(t, c)
	sessions, msgs := good.be.snapshot()
	if len(sessions) != 1 || !sessions[0].TLS || len(msgs) != 1 {
		t.Errorf("server saw sessions %+v, messages %d; want one TLS session with the message", sessions, len(msgs))
	}

	other := newTestCA(t)
	untrusted := startImplicitServer(t, other.valid(t, "relay.test"))
	_, err = Dial(testContext(t), untrusted.addr, Options{LocalName: localName, ServerName: "relay.test", RootCAs: ca.pool,
		Policy: Policy{Level: LevelVerify}, ImplicitTLS: true})
	dialError(t, err, StageHandshake)
	c, err = Dial(testContext(t), untrusted.addr, Options{LocalName: localName, ServerName: "relay.test", RootCAs: ca.pool,
		Policy: Policy{Level: LevelRequired}, ImplicitTLS: true})
	if err != nil {
		t.Fatalf("required, untrusted: %v", err)
	}
	if c.Result.Verified || !c.Result.TLS {
		t.Errorf("required, untrusted: %+v", c.Result)
	}
	c.Close()

	plain := startServer(t, nil, false)
	_, err = Dial(testContext(t), plain.addr, Options{LocalName: localName, ServerName: "relay.test", RootCAs: ca.pool,
		Policy: Policy{Level: LevelRequired}, ImplicitTLS: true, HandshakeTimeout: 2 * time.Second})
	dialError(t, err, StageHandshake)
	plain.wantNothing(t, 1)

	_, err = Dial(testContext(t), good.addr, Options{LocalName: localName, Policy: Policy{Level: LevelOpportunistic}, ImplicitTLS: true})
	dialError(t, err, StageOptions)
}
