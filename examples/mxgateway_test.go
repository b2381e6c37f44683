package examples_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// backend is the customer's mail server behind the gateway: a real go-smtp
// listener that knows some users (550 5.1.1 for the others) and keeps
// what it is sent.
type backend struct {
	users map[string]bool
	mu    sync.Mutex
	msgs  []string
	rcpts int // RCPT commands seen, callouts included
}

func (b *backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &backendSession{b: b}, nil }

type backendSession struct{ b *backend }

func (s *backendSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *backendSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.b.rcpts++
	if !s.b.users[strings.ToLower(to)] {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "backend.internal: no such user here"}
	}
	return nil
}
func (s *backendSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, string(b))
	s.b.mu.Unlock()
	return nil
}
func (s *backendSession) Reset()        {}
func (s *backendSession) Logout() error { return nil }

func (b *backend) messages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.msgs...)
}

// TestMXGatewayChecks runs examples/mx-gateway/Caddyfile with its checks
// (two DNS lists, iprev, SPF, DKIM, DMARC, a recipient callout) against a
// loopback DNS server and a backend that knows alice and bob, and sends
// six messages, each of which must get the verdict the example promises:
// a signed, aligned message is relayed with an Authentication-Results
// header that passes everything (a forged one removed); an unknown user is
// refused at RCPT by the callout; a forged From of a p=reject domain is
// refused after DATA; a client on a DNS list is refused at RCPT; a p=
// quarantine failure is kept in the queue, held; a sender domain on the
// allow list gets through from a listed address with a failing DMARC.
// Nothing is bounced.
func TestMXGatewayChecks(t *testing.T) {
	dns := testdns.Start(t)
	keys := testutil.NewDKIMKeys(t)
	keys.Publish(dns, "sender.test")
	dns.AddTXT("sender.test", "v=spf1 ip4:127.0.0.1 -all")
	dns.AddTXT("_dmarc.sender.test", "v=DMARC1; p=reject")
	dns.AddTXT("_dmarc.forged.test", "v=DMARC1; p=reject")
	dns.AddTXT("_dmarc.bulk.test", "v=DMARC1; p=quarantine")
	dns.AddTXT("_dmarc.partner.test", "v=DMARC1; p=reject")
	dns.Add("1.0.0.127.in-addr.arpa. 300 IN PTR client.sender.test.")
	dns.AddA("client.sender.test", "127.0.0.1")
	dns.AddA("2.0.0.127.zen.spamhaus.org", "127.0.0.2")       // 127.0.0.2 is listed
	dns.AddA("2.0.0.127.b.barracudacentral.org", "127.0.0.2") // on both lists
	t.Setenv("DNS_RESOLVER", dns.Addr())

	be := &backend{users: map[string]bool{"alice@example.com": true, "bob@example.com": true}}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bs := smtp.NewServer(be)
	bs.Domain = "backend.internal"
	go bs.Serve(bl)
	t.Cleanup(func() { bs.Close() })

	body, err := os.ReadFile(filepath.Join("mx-gateway", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	cfgJSON, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": "Caddyfile"})
	if err != nil || len(warnings) > 0 {
		t.Fatalf("adapt: %v %v", err, warnings)
	}
	gateway := freePort(t)
	s := strings.NewReplacer(
		`":25"`, `"127.0.0.1:`+gateway+`"`,
		`"mail.example.com:25"`, `"`+bl.Addr().String()+`"`,
		`"mail-backup.example.com:25"`, `"`+bl.Addr().String()+`"`,
		`"tls":"verify"`, `"tls":"opportunistic"`,
		`"mx.example.com"`, `"mx.example.internal"`,
	).Replace(string(cfgJSON))
	var cfg map[string]any
	if err := json.Unmarshal([]byte(s), &cfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The allow list, as `caddy smtp lists add allow sender_domain
	// partner.test` leaves it in the storage.
	allow := filepath.Join(dir, "storage", "smtp", "lists", "allow.json")
	if err := os.MkdirAll(filepath.Dir(allow), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(allow, []byte(`{"entries":[{"kind":"sender_domain","value":"partner.test"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	apps := cfg["apps"].(map[string]any)
	delete(apps, "http") // the MTA-STS site wants a public certificate
	delete(apps, "tls")
	smtpCfg := apps["smtp"].(map[string]any)
	smtpCfg["queue"].(map[string]any)["path"] = filepath.Join(dir, "queue")
	cfg["storage"] = map[string]any{"module": "file_system", "root": filepath.Join(dir, "storage")}
	cfg["admin"] = map[string]any{"disabled": true}
	raw, _ := json.Marshal(cfg)
	if strings.Contains(string(raw), "mail.example.com") || !strings.Contains(string(raw), dns.Addr()) {
		t.Fatalf("the config was not moved to the test's backend and DNS:\n%s", raw)
	}
	if err := caddy.Load(raw, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
	appMod, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		t.Fatal(err)
	}
	q := appMod.(*smtpapp.App).RunningQueue()

	msg := func(from, subject string) string {
		return "From: <" + from + ">\r\nTo: <alice@example.com>\r\nSubject: " + subject +
			"\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <" + subject + "@test>\r\n\r\nHello.\r\n"
	}
	good := "Authentication-Results: mx.example.internal; dmarc=pass header.from=paypal.example\r\n" +
		keys.Sign(msg("news@sender.test", "good"), "sender.test", "ed")
	for _, tc := range []struct {
		name, client, from, rcpt, data string
		rcptReply, dataReply           string
	}{
		{"signed and aligned", "127.0.0.1", "bounces@sender.test", "alice@example.com", good, "250", "250"},
		{"unknown user", "127.0.0.1", "bounces@sender.test", "nobody@example.com", "", "550 5.1.1", ""},
		{"forged From of a p=reject domain", "127.0.0.1", "ceo@forged.test", "bob@example.com", msg("ceo@forged.test", "forged"), "250", "550 5.7.1"},
		{"client on two DNS lists", "127.0.0.2", "a@sender.test", "alice@example.com", "", "554 5.7.1", ""},
		{"p=quarantine failure", "127.0.0.1", "offers@bulk.test", "bob@example.com", msg("offers@bulk.test", "bulk"), "250", "250"},
		{"allowed partner, listed and failing DMARC", "127.0.0.2", "orders@partner.test", "bob@example.com", msg("orders@partner.test", "partner"), "250", "250"},
	} {
		d, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(tc.client)}, Timeout: 5 * time.Second}).Dial("tcp", "127.0.0.1:"+gateway)
		if err != nil {
			t.Fatal(err)
		}
		c := &dialog{t: t, c: d, r: bufio.NewReader(d)}
		c.reply("220")
		c.cmd("EHLO client.sender.test", "250")
		c.cmd("MAIL FROM:<"+tc.from+">", "250")
		if r := c.cmd("RCPT TO:<"+tc.rcpt+">", ""); !strings.HasPrefix(r, tc.rcptReply) {
			t.Errorf("%s: RCPT: %q, want %s", tc.name, r, tc.rcptReply)
		} else if strings.Contains(r, "backend") {
			t.Errorf("%s: the reply names the backend: %q", tc.name, r)
		}
		if tc.data != "" {
			c.cmd("DATA", "354")
			c.raw(strings.TrimSuffix(tc.data, "\r\n") + "\r\n.\r\n")
			r := c.reply("")
			if !strings.HasPrefix(r, tc.dataReply) {
				t.Errorf("%s: after DATA: %q, want %s", tc.name, r, tc.dataReply)
			}
			if tc.name == "p=quarantine failure" {
				id := strings.TrimPrefix(strings.TrimSpace(r), "250 2.0.0 OK queued as ")
				snap, err := q.Snapshot(id)
				if err != nil || snap.State != queue.StateQuarantine || snap.Quarantine.Check != "dmarc" {
					t.Errorf("%s: %+v %v; want quarantined by dmarc", tc.name, snap, err)
				}
			}
		}
		c.cmd("QUIT", "221")
		d.Close()
	}

	testutil.Eventually(t, 15*time.Second, "the good and the partner's message at the backend", func() bool { return len(be.messages()) == 2 })
	var got, partner string
	for _, m := range be.messages() {
		if strings.Contains(m, "Subject: good") {
			got = m
		} else {
			partner = m
		}
	}
	if !strings.Contains(partner, "Subject: partner") || !strings.Contains(strings.Join(strings.Fields(partner), " "), "dmarc=fail") {
		t.Errorf("the allowed partner's message:\n%.800s", partner)
	}
	head, _, _ := strings.Cut(got, "\r\n\r\n")
	unfolded := strings.Join(strings.Fields(head), " ")
	for _, want := range []string{
		"Authentication-Results: mx.example.internal; iprev=pass policy.iprev=127.0.0.1; spf=pass smtp.mailfrom=bounces@sender.test; dkim=pass header.d=sender.test header.i=@sender.test; dmarc=pass header.from=sender.test",
	} {
		if !strings.Contains(unfolded, want) {
			t.Errorf("delivered header lacks %q:\n%s", want, head)
		}
	}
	if strings.Contains(got, "paypal.example") {
		t.Errorf("the forged Authentication-Results field was relayed:\n%s", head)
	}
	if v := keys.VerifyIndependently([]byte(got), "sender.test"); v != "signature ok" {
		t.Errorf("the relayed message does not verify with python3-dkim: %s", v)
	}
	// Only the quarantined message is left: no bounce was made for the
	// refused ones, and the good one is delivered.
	testutil.Eventually(t, 15*time.Second, "the queue down to the quarantined message", func() bool { return q.Len() == 1 })
	snaps := q.Snapshots()
	if len(snaps) != 1 || snaps[0].State != queue.StateQuarantine {
		t.Errorf("queue: %+v", snaps)
	}
	if n := len(be.messages()); n != 2 {
		t.Errorf("the backend got %d messages, want 2", n)
	}
}

// dialog is a line-oriented SMTP client: raw commands, raw replies.
type dialog struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

// reply reads one (multi-line) reply; want, when not empty, must prefix it.
func (d *dialog) reply(want string) string {
	d.t.Helper()
	_ = d.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var all string
	for {
		line, err := d.r.ReadString('\n')
		if err != nil {
			d.t.Fatalf("reading a reply: %v (so far %q)", err, all)
		}
		all += line
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	if want != "" && !strings.HasPrefix(all, want) {
		d.t.Fatalf("reply %q, want %s", all, want)
	}
	return all
}

// cmd sends a command line and reads its reply.
func (d *dialog) cmd(line, want string) string {
	d.t.Helper()
	d.raw(line + "\r\n")
	return d.reply(want)
}

func (d *dialog) raw(s string) {
	d.t.Helper()
	if _, err := io.WriteString(d.c, s); err != nil {
		d.t.Fatal(err)
	}
}
