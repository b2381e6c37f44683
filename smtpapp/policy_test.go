package smtpapp_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/modules/smtptargets/mx"
	. "github.com/caddy-smtp/caddy-smtp/smtpapp"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// policyWorld is a recipient domain remote.test on loopback: a DNS server,
// an MX receiver with a certificate from a test CA, and an HTTPS server
// for its MTA-STS policy.
type policyWorld struct {
	dns     *testdns.Server
	port    int
	mx      *receiver
	caFile  string
	caPool  *x509.CertPool
	policy  string // served at /.well-known/mta-sts.txt
	httpsRV *httptest.Server
}

func newPolicyWorld(t *testing.T, withTLS bool) *policyWorld {
	t.Helper()
	// MTA-STS policies are cached in Caddy's storage, which the tests of
	// this package share: start without any.
	os.RemoveAll(filepath.Join(sharedStorage, "smtp", "mta-sts"))
	w := &policyWorld{dns: testdns.Start(t)}
	w.port = freeSharedPort(t, "127.0.0.2")
	cfg, pool, caPEM := testCertificateWithCA(t, "mx.remote.test", "mta-sts.remote.test")
	w.caPool = pool
	w.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(w.caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	o := receiverOpts{addr: fmt.Sprintf("127.0.0.2:%d", w.port)}
	if withTLS {
		o.tls = cfg
	}
	w.mx = startReceiver(t, o)
	w.dns.AddMX("remote.test", 10, "mx.remote.test")
	w.dns.AddA("mx.remote.test", "127.0.0.2")
	w.httpsRV = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain")
		io.WriteString(rw, w.policy)
	}))
	w.httpsRV.TLS = cfg.Clone()
	w.httpsRV.StartTLS()
	t.Cleanup(w.httpsRV.Close)
	return w
}

// gateway starts the gateway with outbound MX delivery into this world;
// sender.test is a local maildir (for DSNs and reports).
func (w *policyWorld) gateway(t *testing.T, e *testEnv, mxOpts map[string]any, extra map[string]any) *App {
	t.Helper()
	mxTarget := map[string]any{"target": "mx", "resolvers": []string{w.dns.Addr()}, "port": w.port, "ca_file": w.caFile, "connect_timeout": "2s"}
	for k, v := range mxOpts {
		mxTarget[k] = v
	}
	app := map[string]any{
		"servers": map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
		"routes": []any{map[string]any{"domains": []string{"sender.test"},
			"deliver": map[string]any{"target": "maildir", "path": filepath.Join(e.mail, "{domain}", "{local}"), "create_mailboxes": true}}},
		"outbound": mxTarget,
	}
	for k, v := range extra {
		app[k] = v
	}
	a := e.load(e.config(app))
	// The policy host is mta-sts.remote.test:443; in the test it lives on
	// an ephemeral port, so the fetcher dials there.
	if m, ok := a.TestOutbound().(*mx.MX); ok && m.PolicyCache() != nil {
		m.PolicyCache().Fetcher = &tlsupgrade.MTASTSFetcher{RootCAs: w.caPool, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, w.httpsRV.Listener.Addr().String())
		}}
	}
	return a
}

// sendOutbound queues a message as an authenticated submission would.
func sendOutbound(t *testing.T, app *App, rcpt string, requireTLS bool) string {
	t.Helper()
	id := queue.NewID()
	wr, err := app.TestQueue().Create(id)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(wr, "Subject: to %s\r\nMessage-ID: <%s@test>\r\n\r\nbody\r\n", rcpt, id)
	if err := app.TestQueue().Commit(wr, &queue.Message{From: "s@sender.test", Arrived: time.Now(), RequireTLS: requireTLS,
		Recipients: []*queue.Recipient{{Addr: rcpt}}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// waitAttempts waits until the message has been tried n times and
// returns its state.
func waitAttempts(t *testing.T, app *App, id string, n int) queue.Message {
	t.Helper()
	var got queue.Message
	eventually(t, fmt.Sprintf("%d attempts of %s", n, id), func() bool {
		for _, m := range app.TestQueue().Messages() {
			if m.ID == id && m.Attempts >= n {
				got = m
				return true
			}
		}
		return false
	})
	return got
}

func TestMTASTSEnforceBlocksNonMatchingMX(t *testing.T) {
	w := newPolicyWorld(t, true)
	w.dns.AddTXT("_mta-sts.remote.test", "v=STSv1; id=20261128")
	w.policy = "version: STSv1\r\nmode: enforce\r\nmx: *.elsewhere.test\r\nmax_age: 86400\r\n"
	e := newTestEnv(t)
	app := w.gateway(t, e, nil, nil)
	id := sendOutbound(t, app, "a@remote.test", false)
	m := waitAttempts(t, app, id, 2)
	if len(w.mx.messages()) != 0 || w.mx.conns.Load() != 0 {
		t.Fatalf("MX not in the enforced policy was contacted (%d connections)", w.mx.conns.Load())
	}
	if r := m.Recipients[0]; r.Status != queue.Pending || !strings.Contains(r.LastReply, "451 4.7.5") {
		t.Fatalf("recipient %+v; want deferred with 4.7.5", r)
	}

	// The policy now lists the MX: verified TLS, delivered.
	w.dns.Remove("_mta-sts.remote.test")
	w.dns.AddTXT("_mta-sts.remote.test", "v=STSv1; id=20261129")
	w.policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.remote.test\r\nmax_age: 86400\r\n"
	if _, err := app.TestQueue().Flush(id); err != nil {
		t.Fatal(err)
	}
	if got := w.mx.waitMessages(1)[0]; !got.tls {
		t.Fatal("delivered without TLS under MTA-STS")
	}
}

func TestMTASTSEnforceRefusesSTARTTLSStripping(t *testing.T) {
	w := newPolicyWorld(t, false) // the MX offers no STARTTLS
	w.dns.AddTXT("_mta-sts.remote.test", "v=STSv1; id=1")
	w.policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.remote.test\r\nmax_age: 86400\r\n"
	e := newTestEnv(t)
	app := w.gateway(t, e, nil, nil)
	id := sendOutbound(t, app, "a@remote.test", false)
	waitAttempts(t, app, id, 2)
	if n := len(w.mx.messages()); n != 0 {
		t.Fatalf("%d messages delivered in plaintext under an enforced MTA-STS policy", n)
	}
}

func TestMTASTSTestingModeDeliversAndReports(t *testing.T) {
	w := newPolicyWorld(t, false)
	w.dns.AddTXT("_mta-sts.remote.test", "v=STSv1; id=1")
	w.dns.AddTXT("_smtp._tls.remote.test", "v=TLSRPTv1; rua=mailto:tlsrpt@sender.test")
	w.policy = "version: STSv1\r\nmode: testing\r\nmx: mx.remote.test\r\nmax_age: 86400\r\n"
	e := newTestEnv(t)
	app := w.gateway(t, e, nil, map[string]any{"tls_reporting": map[string]any{
		"organization": "caddy-smtp test", "contact": "postmaster@sender.test", "resolvers": []string{w.dns.Addr()}}})
	TestTLSReports.Reports("", "", time.Time{}, time.Time{}) // start from an empty tally
	sendOutbound(t, app, "a@remote.test", false)
	if got := w.mx.waitMessages(1)[0]; got.tls {
		t.Fatal("expected plaintext delivery (no STARTTLS offered)")
	}
	// The daily report goes out through our own queue, to the rua.
	now := time.Now()
	app.TestSendTLSReports(context.Background(), now.Add(-time.Hour), now)
	data, err := os.ReadFile(e.waitMail("sender.test", "tlsrpt", 1)[0])
	if err != nil {
		t.Fatal(err)
	}
	report := extractTLSReport(t, data)
	var raw map[string]any
	if err := json.Unmarshal(report, &raw); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"organization-name", "date-range", "contact-info", "report-id", "policies"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("report lacks %q: %s", key, report)
		}
	}
	rep, err := tlsupgrade.ParseTLSRPTReport(report)
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Policies[0]
	if p.Policy.Type != "sts" || p.Policy.Domain != "remote.test" || p.Summary.TotalFailureSessionCount != 1 ||
		len(p.FailureDetails) != 1 || p.FailureDetails[0].ResultType != tlsupgrade.ResultSTARTTLSNotSupported {
		t.Fatalf("report policy %+v", p)
	}
}

// extractTLSReport returns the JSON of a mailed TLS report.
func extractTLSReport(t *testing.T, msg []byte) []byte {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("content type %q %v", mt, params)
	}
	if !strings.HasPrefix(m.Header.Get("Subject"), "Report Domain: remote.test Submitter: caddy-smtp test Report-ID: <") {
		t.Errorf("subject %q", m.Header.Get("Subject"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err != nil {
			t.Fatal("no report part")
		}
		if part.Header.Get("Content-Type") != tlsupgrade.TLSRPTMediaTypeGzip {
			continue
		}
		zr, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, part))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// spkiSHA256 is the DANE-EE 3 1 1 association data of a certificate.
func spkiSHA256(c *x509.Certificate) []byte {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return sum[:]
}

func TestDANEMatchAndMismatch(t *testing.T) {
	w := newPolicyWorld(t, true)
	leaf := w.mx.srv.TLSConfig.Certificates[0].Leaf
	for _, name := range []string{"remote.test", "mx.remote.test", "_25._tcp.mx.remote.test"} {
		w.dns.SetAuthenticated(name, true)
	}
	w.dns.AddTLSA("_25._tcp.mx.remote.test", 3, 1, 1, spkiSHA256(leaf))
	e := newTestEnv(t)
	app := w.gateway(t, e, map[string]any{"ca_file": ""}, nil) // DANE needs no CA
	sendOutbound(t, app, "a@remote.test", false)
	if got := w.mx.waitMessages(1)[0]; !got.tls {
		t.Fatal("not delivered over TLS with DANE")
	}

	// A TLSA record that matches nothing (another domain, so another
	// session): no delivery, no plaintext.
	w.dns.AddMX("other.test", 10, "mx.other.test")
	w.dns.AddA("mx.other.test", "127.0.0.2")
	for _, name := range []string{"other.test", "mx.other.test", "_25._tcp.mx.other.test"} {
		w.dns.SetAuthenticated(name, true)
	}
	w.dns.AddTLSA("_25._tcp.mx.other.test", 3, 1, 1, bytes.Repeat([]byte{0xab}, 32))
	id := sendOutbound(t, app, "b@other.test", false)
	m := waitAttempts(t, app, id, 2)
	if n := len(w.mx.messages()); n != 1 {
		t.Fatalf("%d messages at the MX; the DANE mismatch must not deliver", n)
	}
	if !strings.Contains(m.Recipients[0].LastReply, "4.7.5") {
		t.Fatalf("last reply %q", m.Recipients[0].LastReply)
	}

	// Without the AD bit the TLSA records are not trusted: DANE does not
	// apply and delivery is opportunistic.
	for _, name := range []string{"other.test", "mx.other.test", "_25._tcp.mx.other.test"} {
		w.dns.SetAuthenticated(name, false)
	}
	if _, err := app.TestQueue().Flush(id); err != nil {
		t.Fatal(err)
	}
	w.mx.waitMessages(2)
}

func TestREQUIRETLSToOpportunisticOnlyDestinationBounces(t *testing.T) {
	e := newTestEnv(t)
	r := startReceiver(t, receiverOpts{}) // no TLS at all
	addr, _ := e.startRelayGateway(map[string]any{"hosts": []string{r.addr}})
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	d.startTLS(&tls.Config{ServerName: testHost, RootCAs: e.rootPool()})
	d.cmd("EHLO client.example", "REQUIRETLS")
	d.cmd("MAIL FROM:<rt@sender.test> REQUIRETLS", "250")
	d.cmd("RCPT TO:<user@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw("Subject: secret\r\n\r\nonly over TLS\r\n.\r\n")
	d.expect("250")
	p := e.readDSN("rt")
	if rc := p.Report.Recipients[0]; rc.Status != "5.7.10" || rc.Action != "failed" {
		t.Fatalf("DSN recipient %+v", rc)
	}
	if n := len(r.messages()); n != 0 {
		t.Fatal("REQUIRETLS message delivered without TLS")
	}
}
