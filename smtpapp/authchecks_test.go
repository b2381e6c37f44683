package smtpapp_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	mdns "github.com/miekg/dns"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// testMessage is a message with the given From address and a short body.
func testMessage(from, subject string) string {
	return "From: Sender <" + from + ">\r\nTo: <user@example.test>\r\nSubject: " + subject +
		"\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <" + subject + "@test>\r\n\r\nHello,\r\n\r\nthis is " + subject + ".\r\n"
}

// authResults returns the Authentication-Results field of a delivered
// message (our own: the first), unfolded.
func authResults(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(b), "\r\n\r\n")
	var out string
	in := false
	for _, line := range strings.Split(head, "\r\n") {
		switch {
		case strings.HasPrefix(line, "Authentication-Results:") && out == "":
			out, in = line, true
		case in && (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")):
			out += " " + strings.TrimSpace(line)
		default:
			in = false
		}
	}
	return out
}

// TestDKIMVerification sends messages signed by dkimsign (RSA and
// Ed25519) and changed in transit to a server with the dkim check, and
// reads the verdicts from the Authentication-Results header of the
// delivered messages. A forged Authentication-Results field with our
// authserv-id is removed; a good message still verifies with dkimverify
// after our header fields were added.
func TestDKIMVerification(t *testing.T) {
	keys := testutil.NewDKIMKeys(t)
	dns := testdns.Start(t)
	keys.Publish(dns, "signed.test")
	dns.SetRcode("rsa._domainkey.temp.test", mdns.TypeTXT, mdns.RcodeServerFailure)
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"checks": []any{map[string]any{"check": "dkim", "resolvers": []string{dns.Addr()}}},
		}},
	}))
	addr := addrsOf(app, "mx")[0]

	good := keys.Sign(testMessage("a@signed.test", "rsa"), "signed.test", "rsa")
	ed := keys.Sign(testMessage("a@signed.test", "ed"), "signed.test", "ed")
	badBody := strings.Replace(keys.Sign(testMessage("a@signed.test", "badbody"), "signed.test", "rsa"), "this is", "this was", 1)
	badHeader := strings.Replace(keys.Sign(testMessage("a@signed.test", "badheader"), "signed.test", "rsa"), "Subject: badheader", "Subject: changed", 1)
	noKey := keys.Sign(testMessage("a@nokey.test", "nokey"), "nokey.test", "rsa")
	temp := keys.Sign(testMessage("a@temp.test", "temp"), "temp.test", "rsa")
	forged := "Authentication-Results: " + testHost + "; dkim=pass header.d=paypal.example\r\n" + testMessage("a@unsigned.test", "unsigned")
	for _, tc := range []struct{ local, msg, want string }{
		{"rsa", good, "dkim=pass header.d=signed.test"},
		{"ed", ed, "dkim=pass header.d=signed.test"},
		{"badbody", badBody, "dkim=fail"},
		{"badheader", badHeader, "dkim=fail"},
		{"nokey", noKey, "dkim=permerror"},
		{"temp", temp, "dkim=temperror"},
		{"unsigned", forged, "dkim=none"},
	} {
		d := dial(t, addr)
		d.expect("220")
		d.cmd("EHLO client.example", "250")
		if r := d.sendMail("a@sender.test", tc.local+"@example.test", strings.TrimSuffix(tc.msg, "\r\n")); !strings.HasPrefix(r, "250") {
			t.Fatalf("%s: %q", tc.local, r)
		}
		d.cmd("QUIT", "221")
		file := e.waitMail("example.test", tc.local, 1)[0]
		ar := authResults(t, file)
		if !strings.HasPrefix(ar, "Authentication-Results: "+testHost+";") || !strings.Contains(ar, tc.want) {
			t.Errorf("%s: %q, want %q", tc.local, ar, tc.want)
		}
		if strings.Count(ar, "dkim=") != 1 {
			t.Errorf("%s: one dkim result expected: %q", tc.local, ar)
		}
		b, _ := os.ReadFile(file)
		if tc.local == "unsigned" && strings.Contains(string(b), "paypal.example") {
			t.Errorf("the forged Authentication-Results field was delivered:\n%s", b)
		}
		if tc.local == "rsa" || tc.local == "ed" {
			if got := keys.VerifyIndependently(b, "signed.test"); got != "signature ok" {
				t.Errorf("%s: python3-dkim on the delivered message: %s", tc.local, got)
			}
		}
	}
	// The checks' results are kept with the message (admin API view)
	// while it is queued: not tested here, see TestDMARCEvaluation.
	_ = queue.StateQuarantine
}

// TestDMARCEvaluation runs spf, dkim and dmarc on a server and sends
// messages whose From domains publish DMARC policies on a loopback DNS
// server: aligned SPF or DKIM passes (relaxed alignment through the
// organisational domain), strict alignment fails a subdomain, p=reject is
// refused with 550 5.7.1, p=quarantine (and p=reject outside pct=0) is
// held in the queue as quarantined, no policy is dmarc=none, a lookup
// failure dmarc=temperror, and several From addresses are refused.
func TestDMARCEvaluation(t *testing.T) {
	keys := testutil.NewDKIMKeys(t)
	dns := testdns.Start(t)
	for _, d := range []string{"pass.test", "relaxed.test", "strict.test"} {
		keys.Publish(dns, d)
	}
	dns.AddTXT("spf.test", "v=spf1 ip4:127.0.0.1 -all")
	dns.AddTXT("_dmarc.pass.test", "v=DMARC1; p=reject")
	dns.AddTXT("_dmarc.spf.test", "v=DMARC1; p=reject")
	dns.AddTXT("_dmarc.relaxed.test", "v=DMARC1; p=reject")
	dns.AddTXT("_dmarc.strict.test", "v=DMARC1; p=reject; adkim=s; aspf=s")
	dns.AddTXT("_dmarc.reject.test", "v=DMARC1; p=reject")
	dns.AddTXT("_dmarc.quarantine.test", "v=DMARC1; p=quarantine")
	dns.AddTXT("_dmarc.sample.test", "v=DMARC1; p=reject; pct=0")
	dns.SetRcode("_dmarc.temp.test", mdns.TypeTXT, mdns.RcodeServerFailure)
	e := newTestEnv(t)
	resolvers := []string{dns.Addr()}
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"checks": []any{
				map[string]any{"check": "spf", "resolvers": resolvers},
				map[string]any{"check": "dkim", "resolvers": resolvers},
				map[string]any{"check": "dmarc", "resolvers": resolvers},
			},
		}},
	}))
	addr := addrsOf(app, "mx")[0]
	type result int
	const (
		delivered result = iota
		refused
		quarantined
	)
	for _, tc := range []struct {
		local, sender, msg string
		want               result
		reply, ar          string
	}{
		{"dkim", "bounce@other.test", keys.Sign(testMessage("a@pass.test", "dkim"), "pass.test", "rsa"), delivered, "250", "dmarc=pass header.from=pass.test"},
		{"spf", "bounce@spf.test", testMessage("a@spf.test", "spf"), delivered, "250", "dmarc=pass header.from=spf.test"},
		{"relaxed", "b@other.test", keys.Sign(testMessage("a@news.relaxed.test", "relaxed"), "relaxed.test", "ed"), delivered, "250", "dmarc=pass header.from=news.relaxed.test"},
		{"strict", "b@other.test", keys.Sign(testMessage("a@news.strict.test", "strict"), "strict.test", "rsa"), refused, "550 5.7.1", ""},
		{"reject", "b@other.test", testMessage("a@reject.test", "reject"), refused, "550 5.7.1", ""},
		{"quarantine", "b@other.test", testMessage("a@quarantine.test", "quarantine"), quarantined, "250", `dmarc=fail reason="p=quarantine" header.from=quarantine.test`},
		{"sample", "b@other.test", testMessage("a@sample.test", "sample"), quarantined, "250", `dmarc=fail reason="p=quarantine" header.from=sample.test`},
		{"none", "b@other.test", testMessage("a@nopolicy.test", "none"), delivered, "250", "dmarc=none header.from=nopolicy.test"},
		{"temp", "b@other.test", testMessage("a@temp.test", "temp"), delivered, "250", "dmarc=temperror header.from=temp.test"},
		{"twofrom", "b@other.test", strings.Replace(testMessage("a@pass.test", "twofrom"), "From: Sender <a@pass.test>", "From: a@pass.test, b@reject.test", 1), refused, "550 5.7.1", ""},
	} {
		d := dial(t, addr)
		d.expect("220")
		d.cmd("EHLO client.example", "250")
		r := d.sendMail(tc.sender, tc.local+"@example.test", strings.TrimSuffix(tc.msg, "\r\n"))
		d.cmd("QUIT", "221")
		if !strings.HasPrefix(r, tc.reply) {
			t.Errorf("%s: %q, want %s", tc.local, r, tc.reply)
			continue
		}
		switch tc.want {
		case delivered:
			ar := authResults(t, e.waitMail("example.test", tc.local, 1)[0])
			if !strings.Contains(ar, tc.ar) || !strings.Contains(ar, "spf=") || !strings.Contains(ar, "dkim=") {
				t.Errorf("%s: %q, want %q with spf and dkim results", tc.local, ar, tc.ar)
			}
		case quarantined:
			id := strings.TrimPrefix(strings.TrimSpace(r), "250 2.0.0 OK queued as ")
			snap, err := app.TestQueue().Snapshot(id)
			if err != nil {
				t.Fatalf("%s: %v", tc.local, err)
			}
			if snap.State != queue.StateQuarantine || snap.Quarantine == nil || snap.Quarantine.Check != "dmarc" {
				t.Errorf("%s: state %s, quarantine %+v; want quarantined by dmarc", tc.local, snap.State, snap.Quarantine)
			}
			var dmarcResult string
			for _, c := range snap.Checks {
				if c.Check == "dmarc" {
					dmarcResult = c.Verdict + " " + c.Result
				}
			}
			if !strings.HasPrefix(dmarcResult, "quarantine fail p=") {
				t.Errorf("%s: check results %+v", tc.local, snap.Checks)
			}
			header, err := app.TestQueue().ReadHeader(id)
			if err != nil || !strings.Contains(strings.Join(strings.Fields(string(header)), " "), tc.ar) {
				t.Errorf("%s: header of the quarantined message (%v):\n%s", tc.local, err, header)
			}
			if files := e.mailFiles("example.test", tc.local); len(files) != 0 {
				t.Errorf("%s: a quarantined message was delivered", tc.local)
			}
		}
	}
}

// TestIPRevCheck: forward-confirmed reverse DNS against a loopback DNS
// server. A client whose PTR name resolves back to it passes (and the
// Authentication-Results header says iprev=pass); a PTR name that points
// elsewhere, and no PTR at all, fail (550 5.7.25 with fail reject); a
// DNS failure is a temperror, accepted by default and not cached; a pass
// is cached (one PTR query for two connections).
func TestIPRevCheck(t *testing.T) {
	dns := testdns.Start(t)
	dns.Add("1.0.0.127.in-addr.arpa. 300 IN PTR mail.good.test.")
	dns.AddA("mail.good.test", "127.0.0.1")
	dns.Add("2.0.0.127.in-addr.arpa. 300 IN PTR liar.test.")
	dns.AddA("liar.test", "192.0.2.9")
	dns.SetRcode("4.0.0.127.in-addr.arpa", mdns.TypePTR, mdns.RcodeServerFailure)
	e := newTestEnv(t)
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"checks": []any{map[string]any{"check": "iprev", "fail": "reject", "resolvers": []string{dns.Addr()}}},
		}},
	}))
	addr := addrsOf(app, "mx")[0]
	for _, tc := range []struct{ from, local, rcpt, ar string }{
		{"127.0.0.1", "good", "250", "iprev=pass policy.iprev=127.0.0.1"},
		{"127.0.0.1", "good2", "250", "iprev=pass policy.iprev=127.0.0.1"},
		{"127.0.0.2", "liar", "550 5.7.25", ""},
		{"127.0.0.3", "noptr", "550 5.7.25", ""},
		{"127.0.0.4", "temp", "250", "iprev=temperror policy.iprev=127.0.0.4"},
	} {
		d := dialFrom(t, tc.from, addr)
		d.expect("220")
		d.cmd("EHLO client.example", "250")
		d.cmd("MAIL FROM:<a@sender.test>", "250")
		if got := d.cmd("RCPT TO:<"+tc.local+"@example.test>", tc.rcpt); !strings.HasPrefix(got, tc.rcpt) {
			t.Errorf("%s from %s: %q, want %s", tc.local, tc.from, got, tc.rcpt)
			continue
		}
		if tc.ar != "" {
			d.cmd("DATA", "354")
			d.raw(strings.TrimSuffix(testMessage("a@sender.test", tc.local), "\r\n") + "\r\n.\r\n")
			d.expect("250")
			if ar := authResults(t, e.waitMail("example.test", tc.local, 1)[0]); !strings.Contains(ar, tc.ar) {
				t.Errorf("%s: %q, want %q", tc.local, ar, tc.ar)
			}
		}
		d.cmd("QUIT", "221")
	}
	if n := dns.Queries("1.0.0.127.in-addr.arpa", mdns.TypePTR); n != 1 {
		t.Errorf("%d PTR queries for 127.0.0.1, want 1 (cached)", n)
	}
	if n := dns.Queries("4.0.0.127.in-addr.arpa", mdns.TypePTR); n == 0 {
		t.Error("the failing PTR lookup was not made")
	}
}

// TestDMARCNeedsDKIMFirst: a config where the dkim check comes after
// dmarc in the same list is refused when it is loaded.
func TestDMARCNeedsDKIMFirst(t *testing.T) {
	e := newTestEnv(t)
	raw, _ := json.Marshal(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"checks": []any{map[string]any{"check": "dmarc"}, map[string]any{"check": "dkim"}},
		}},
	}))
	cfg := new(caddy.Config)
	if err := json.Unmarshal(raw, cfg); err != nil {
		t.Fatal(err)
	}
	err := caddy.Validate(cfg)
	if err == nil || !strings.Contains(err.Error(), "check dmarc must come after check dkim") {
		t.Fatalf("validate: %v, want the order refused", err)
	}
}

// TestQuarantineInAdminAPI: a message that dmarc quarantines is listed by
// the admin API as quarantined, with the checks' results, the quarantine's
// check and reason and our Authentication-Results header in its view; a
// release delivers it.
func TestQuarantineInAdminAPI(t *testing.T) {
	dns := testdns.Start(t)
	dns.AddTXT("_dmarc.bulk.test", "v=DMARC1; p=quarantine")
	e := newTestEnv(t)
	a := &adminEnv{testEnv: e, sock: filepath.Join(e.dir, "admin.sock")}
	resolvers := []string{dns.Addr()}
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"checks": []any{
				map[string]any{"check": "spf", "resolvers": resolvers},
				map[string]any{"check": "dkim", "resolvers": resolvers},
				map[string]any{"check": "dmarc", "resolvers": resolvers},
			},
		}},
	}, func(c map[string]any) {
		c["admin"] = map[string]any{"listen": "unix/" + a.sock, "config": map[string]any{"persist": false}}
	}))
	a.smtp = addrsOf(app, "mx")[0]
	a.client = adminClient(a.sock)

	d := dial(t, a.smtp)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	r := d.sendMail("offers@bulk.test", "user@example.test", strings.TrimSuffix(testMessage("offers@bulk.test", "bulk"), "\r\n"))
	d.cmd("QUIT", "221")
	id := strings.TrimSpace(strings.TrimPrefix(r, "250 2.0.0 OK queued as "))
	var view struct {
		queue.Snapshot
		Headers string `json:"headers"`
	}
	a.ok("GET", "/smtp/queue/"+id, &view)
	if view.State != "quarantined" || view.Quarantine == nil || view.Quarantine.Check != "dmarc" ||
		!strings.Contains(view.Quarantine.Reason, "dmarc=fail header.from=bulk.test p=quarantine") {
		t.Fatalf("view: state %q, quarantine %+v", view.State, view.Quarantine)
	}
	got := map[string]string{}
	for _, c := range view.Checks {
		got[c.Check] = c.Verdict + " " + c.Result
	}
	if got["spf"] != "accept none" || got["dkim"] != "accept none" || got["dmarc"] != "quarantine fail p=quarantine" {
		t.Errorf("checks in the view: %v", got)
	}
	if !strings.HasPrefix(view.Headers, "Authentication-Results: "+testHost+";") {
		t.Errorf("headers in the view:\n%s", view.Headers)
	}
	if files := e.mailFiles("example.test", "user"); len(files) != 0 {
		t.Fatal("the quarantined message was delivered before its release")
	}
	a.ok("POST", "/smtp/queue/"+id+"/release", nil)
	e.waitMail("example.test", "user", 1)
}

// TestTrustedClientsNotJudged: dmarc (and spf) on a route, which runs for
// every client, do not judge mail from relay_networks: a p=reject domain's
// unauthenticated message is refused from the internet and accepted from
// the company's own network.
func TestTrustedClientsNotJudged(t *testing.T) {
	dns := testdns.Start(t)
	dns.AddTXT("_dmarc.company.test", "v=DMARC1; p=reject")
	dns.AddTXT("company.test", "v=spf1 ip4:192.0.2.1 -all")
	e := newTestEnv(t)
	resolvers := []string{dns.Addr()}
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen":         []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"relay_networks": []string{"127.0.0.2/32"},
		}},
		"routes": []any{map[string]any{
			"domains": []string{"example.test"},
			"checks": []any{
				map[string]any{"check": "spf", "fail": "accept", "resolvers": resolvers},
				map[string]any{"check": "dkim", "resolvers": resolvers},
				map[string]any{"check": "dmarc", "resolvers": resolvers},
			},
			"deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true},
		}},
	}))
	addr := addrsOf(app, "mx")[0]
	for _, tc := range []struct{ from, local, want string }{
		{"127.0.0.1", "internet", "550 5.7.1"},
		{"127.0.0.2", "office", "250"},
	} {
		d := dialFrom(t, tc.from, addr)
		d.expect("220")
		d.cmd("EHLO client.example", "250")
		r := d.sendMail("ceo@company.test", tc.local+"@example.test", strings.TrimSuffix(testMessage("ceo@company.test", tc.local), "\r\n"))
		if !strings.HasPrefix(r, tc.want) {
			t.Errorf("from %s: %q, want %s", tc.from, r, tc.want)
		}
		d.cmd("QUIT", "221")
	}
	ar := authResults(t, e.waitMail("example.test", "office", 1)[0])
	if strings.Contains(ar, "dmarc=") || strings.Contains(ar, "spf=") {
		t.Errorf("a trusted client's message was judged: %q", ar)
	}
}
