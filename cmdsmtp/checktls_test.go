package cmdsmtp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// checkWorld is a DNS server on loopback and two go-smtp receivers on one
// port: 127.0.0.2 with STARTTLS (a certificate from a test CA for
// mx.dane.test and mx.bad.test) and 127.0.0.3 without.
type checkWorld struct {
	dns    *testdns.Server
	port   int
	caFile string
	leaf   *x509.Certificate
	tls    *smtpRecorder
	plain  *smtpRecorder
}

func newCheckWorld(t *testing.T) *checkWorld {
	t.Helper()
	w := &checkWorld{dns: testdns.Start(t)}
	cfg, caPEM := testServerTLS(t, "mx.dane.test", "mx.bad.test")
	w.leaf = cfg.Certificates[0].Leaf
	w.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(w.caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	lnTLS, lnPlain := listenSamePort(t, "127.0.0.2", "127.0.0.3")
	w.port = lnTLS.Addr().(*net.TCPAddr).Port
	w.tls = serveSMTP(t, lnTLS, cfg)
	w.plain = serveSMTP(t, lnPlain, nil)

	spki := sha256.Sum256(w.leaf.RawSubjectPublicKeyInfo)
	w.addMX("dane.test", "mx.dane.test", "127.0.0.2", true)
	w.dns.AddTLSA("_25._tcp.mx.dane.test", tlsupgrade.TLSAUsageDANEEE, tlsupgrade.TLSASelectorSPKI, tlsupgrade.TLSAMatchSHA256, spki[:])
	return w
}

// addMX gives domain the MX host at ip; with signed, the answers about
// domain, host and the TLSA name of host carry the AD bit.
func (w *checkWorld) addMX(domain, host, ip string, signed bool) {
	w.dns.AddMX(domain, 10, host)
	w.dns.AddA(host, ip)
	if signed {
		for _, name := range []string{domain, host, "_25._tcp." + host} {
			w.dns.SetAuthenticated(name, true)
		}
	}
}

// run runs the command with the world's resolver, port, CA and a short
// timeout, then args; it fails the test unless the exit status is want
// (with an error unless it is 0), and returns the output.
func (w *checkWorld) run(t *testing.T, want int, args ...string) string {
	t.Helper()
	all := append([]string{"--resolver", w.dns.Addr(), "--port", strconv.Itoa(w.port),
		"--helo", "checker.test", "--timeout", "5s", "--ca", w.caFile}, args...)
	code, out, err := runCheckTLS(t, all...)
	if code != want || (err == nil) != (want == checkOK) {
		t.Fatalf("exit %d (%v), want %d:\n%s", code, err, want, out)
	}
	return out
}

func runCheckTLS(t *testing.T, args ...string) (int, string, error) {
	t.Helper()
	cmd := checkTLSCommand()
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("flags %q: %v", args, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out bytes.Buffer
	code, err := checkTLS(ctx, caddycmd.Flags{FlagSet: cmd.Flags()}, &out)
	t.Logf("check-tls %s: exit %d (%v)\n%s", strings.Join(args, " "), code, err, out.String())
	return code, out.String(), err
}

// wantLines fails unless out has a line matching each of want, where a
// want is the words of a line with any spacing between them.
func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	var lines []string
	for line := range strings.SplitSeq(out, "\n") {
		lines = append(lines, strings.Join(strings.Fields(line), " "))
	}
	for _, wl := range want {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, wl) }) {
			t.Errorf("no line starting with %q in:\n%s", wl, out)
		}
	}
}

func TestCheckTLSDANE(t *testing.T) {
	w := newCheckWorld(t)
	out := w.run(t, checkOK, "dane.test")
	wantLines(t, out,
		"Domain dane.test (configured level: opportunistic)",
		"MX 1 host(s), DNSSEC-authenticated (AD)",
		"MTA-STS no policy",
		"TLS-RPT no record",
		"MX 10 mx.dane.test",
		"TLSA _25._tcp.mx.dane.test: 1 record(s), 1 usable, DNSSEC-authenticated",
		"3 1 1 ",
		"Policy dane",
		"Addresses 127.0.0.2",
		"mx.dane.test[127.0.0.2]:"+strconv.Itoa(w.port),
		"STARTTLS offered",
		"TLS TLSv1.3, TLS_",
		"Certificate CN=mx.dane.test",
		"issuer CN=check-tls test CA",
		"names mx.dane.test mx.bad.test",
		"expires ",
		"PKIX verified",
		"DANE verified",
		"REQUIRETLS no: REQUIRETLS support required, but the server does not offer it", // nor does go-smtp
		"Delivery would succeed under policy dane",
		"Result: every MX host of dane.test would accept delivery under its policy.",
	)
	if strings.Contains(out, "Opportunistic") {
		t.Errorf("a second connection after a good one:\n%s", out)
	}
	// Connect, EHLO, STARTTLS, EHLO, QUIT: two sessions, no mail.
	sessions, mails := w.tls.snapshot()
	if want := []string{"checker.test plain", "checker.test tls"}; !slices.Equal(sessions, want) || mails != 0 {
		t.Errorf("receiver saw sessions %q and %d MAIL commands, want %q and none", sessions, mails, want)
	}
}

func TestCheckTLSPlaintext(t *testing.T) {
	w := newCheckWorld(t)
	w.addMX("plain.test", "mx.plain.test", "127.0.0.3", false)
	out := w.run(t, checkOK, "plain.test")
	wantLines(t, out,
		"MX 1 host(s), not DNSSEC-authenticated: no DANE",
		"TLSA _25._tcp.mx.plain.test: no records, not authenticated",
		"Policy opportunistic",
		"STARTTLS not offered",
		"TLS none: plaintext session",
		"Fallback starttls not offered",
		"Delivery would succeed under policy opportunistic",
		"Result: every MX host of plain.test would accept delivery",
	)
	for _, no := range []string{"Certificate", "PKIX", "DANE ", "Opportunistic"} {
		if strings.Contains(out, no) {
			t.Errorf("plaintext report mentions %q:\n%s", no, out)
		}
	}
	if sessions, mails := w.plain.snapshot(); !slices.Equal(sessions, []string{"checker.test plain"}) || mails != 0 {
		t.Errorf("receiver saw sessions %q and %d MAIL commands", sessions, mails)
	}
}

// With --level dane a host without DANE is not used (SelectPolicy says
// so); the opportunistic session still shows what it offers.
func TestCheckTLSRequiredDANE(t *testing.T) {
	w := newCheckWorld(t)
	w.addMX("plain.test", "mx.plain.test", "127.0.0.3", false)
	out := w.run(t, checkFail, "--level", "dane", "plain.test")
	wantLines(t, out,
		"Domain plain.test (configured level: dane)",
		"Policy host not usable: dane-required: DANE required, but the host has no DNSSEC-authenticated TLSA records",
		"Delivery would not use this host",
		"Opportunistic (what a session without the policy gets):",
		"STARTTLS not offered",
		"Result: 1 of 1 MX host(s) of plain.test would not accept delivery",
	)
}

// A DANE host whose certificate matches no TLSA record fails; the
// opportunistic session shows what it presents.
func TestCheckTLSDANEMismatch(t *testing.T) {
	w := newCheckWorld(t)
	w.addMX("bad.test", "mx.bad.test", "127.0.0.2", true)
	w.dns.AddTLSA("_25._tcp.mx.bad.test", 3, 1, 1, make([]byte, 32))
	w.dns.AddTXT("_smtp._tls.bad.test", "v=TLSRPTv1; rua=mailto:tlsrpt@bad.test")
	out := w.run(t, checkFail, "bad.test")
	wantLines(t, out,
		"TLS-RPT mailto:tlsrpt@bad.test",
		"Policy dane",
		"DANE not verified",
		"Failure tlsa-invalid: the certificate chain matches none of 1 usable TLSA records",
		"Delivery would FAIL under policy dane: tlsupgrade: 127.0.0.2:"+strconv.Itoa(w.port)+": handshake",
		"Opportunistic (what a session without the policy gets):",
		"Certificate CN=mx.dane.test",
		"spki sha256 ",
		"Result: 1 of 1 MX host(s) of bad.test would not accept delivery under their policy: mx.bad.test",
	)
}

// The MTA-STS policy is fetched from mta-sts.<domain> on port 443 only,
// which a test cannot serve; what is tested is the path where the TXT
// record exists and the fetch fails (here: the policy host has no
// address), which delivery treats as no policy (RFC 8461 section 3.3).
func TestCheckTLSMTASTSDiscoveryFailure(t *testing.T) {
	w := newCheckWorld(t)
	w.addMX("sts.test", "mx.plain.test", "127.0.0.3", false)
	w.dns.AddTXT("_mta-sts.sts.test", "v=STSv1; id=20260101")
	out := w.run(t, checkOK, "sts.test")
	wantLines(t, out,
		`MTA-STS discovery failed, delivery goes on as without a policy: sts-policy-fetch-error: `,
		"MTA-STS no policy applies",
		"Policy opportunistic",
	)
	if !strings.Contains(out, `[TXT "v=STSv1; id=20260101"]`) {
		t.Errorf("record not shown:\n%s", out)
	}
}

func TestCheckTLSNoMail(t *testing.T) {
	w := newCheckWorld(t)
	w.dns.SetNullMX("null.test")
	out := w.run(t, checkFail, "null.test")
	wantLines(t, out, "Result: no delivery to null.test: lookup MX null.test on ")
	if !strings.Contains(out, "null MX") {
		t.Errorf("null MX not named:\n%s", out)
	}
}

func TestCheckTLSJSON(t *testing.T) {
	w := newCheckWorld(t)
	out := w.run(t, checkOK, "--json", "DANE.test.")
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	keys := func(m any) []string {
		var ks []string
		for k := range m.(map[string]any) {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}
	if got, want := keys(raw), []string{"domain", "hosts", "level", "mta_sts", "mx", "ok", "tls_rpt"}; !slices.Equal(got, want) {
		t.Errorf("top-level keys %q, want %q", got, want)
	}
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Domain != "dane.test" || !rep.OK || !rep.MX.Authenticated || len(rep.Hosts) != 1 {
		t.Fatalf("report %+v", rep)
	}
	h := rep.Hosts[0]
	if h.Name != "mx.dane.test" || h.Policy != "dane" || !h.TLSA.Used || h.MTASTSMatch != nil || len(h.Probes) != 1 || !h.OK {
		t.Fatalf("host %+v", h)
	}
	a := h.Probes[0].Policy
	if a == nil || !a.OK || a.Policy != "dane" || !a.STARTTLSOffered || !a.TLS || !a.DANEVerified || !a.PKIXVerified ||
		a.Certificate == nil || a.Certificate.Subject != "CN=mx.dane.test" || h.Probes[0].Opportunistic != nil {
		t.Fatalf("attempt %+v", a)
	}
	spki := sha256.Sum256(w.leaf.RawSubjectPublicKeyInfo)
	if a.Certificate.SPKISHA256 != fmt.Sprintf("%x", spki) || !a.Certificate.NotAfter.Equal(w.leaf.NotAfter) {
		t.Errorf("certificate %+v", a.Certificate)
	}
}

func TestCheckTLSUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"a.test", "b.test"},
		{"[192.0.2.1]"},
		{"--port", "0", "a.test"},
		{"--level", "paranoid", "a.test"},
		{"--resolver", "dns.example", "a.test"},
		{"--timeout", "0s", "a.test"},
		{"--ca", filepath.Join(t.TempDir(), "missing.pem"), "a.test"},
	} {
		code, out, err := runCheckTLS(t, args...)
		if code != checkUsage || err == nil || out != "" {
			t.Errorf("%q: exit %d (%v), output %q; want 2 with an error", args, code, err, out)
		}
	}
	// Flag syntax errors come from cobra; they must exit with 2 as well.
	// The exit status travels in caddycmd's unexported exitError.
	cmd := checkTLSCommand()
	err := cmd.FlagErrorFunc()(cmd, errors.New("unknown flag: --bogus"))
	if v := reflect.ValueOf(err); !v.IsValid() || v.Kind() != reflect.Pointer || v.Elem().FieldByName("ExitCode").Int() != checkUsage {
		t.Errorf("flag error %#v, want exit status 2", err)
	}
}

// testServerTLS makes a CA and a server certificate for names, and returns
// the server's TLS config and the CA in PEM.
func testServerTLS(t *testing.T, names ...string) (*tls.Config, []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "check-tls test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour).Truncate(time.Second),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return &tls.Config{Certificates: []tls.Certificate{cert}},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// listenSamePort listens on one port of both addresses.
func listenSamePort(t *testing.T, a, b string) (net.Listener, net.Listener) {
	t.Helper()
	for range 50 {
		la, err := net.Listen("tcp", net.JoinHostPort(a, "0"))
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(la.Addr().String())
		lb, err := net.Listen("tcp", net.JoinHostPort(b, port))
		if err == nil {
			return la, lb
		}
		la.Close()
	}
	t.Fatalf("no port free on both %s and %s", a, b)
	return nil, nil
}

// smtpRecorder is a go-smtp backend that records its sessions (they start
// at each EHLO) and counts MAIL commands, which it refuses.
type smtpRecorder struct {
	mu       sync.Mutex
	sessions []string // "<EHLO name> plain|tls"
	mails    int
}

func serveSMTP(t *testing.T, ln net.Listener, cfg *tls.Config) *smtpRecorder {
	r := &smtpRecorder{}
	srv := smtp.NewServer(r)
	srv.Domain = "receiver.test"
	srv.TLSConfig = cfg
	srv.ErrorLog = discardLog{}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *smtpRecorder) NewSession(c *smtp.Conn) (smtp.Session, error) {
	mode := "plain"
	if _, ok := c.TLSConnectionState(); ok {
		mode = "tls"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sessions = append(r.sessions, c.Hostname()+" "+mode)
	return recorderSession{r}, nil
}

func (r *smtpRecorder) snapshot() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sessions), r.mails
}

type recorderSession struct{ r *smtpRecorder }

func (s recorderSession) Mail(string, *smtp.MailOptions) error {
	s.r.mu.Lock()
	s.r.mails++
	s.r.mu.Unlock()
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no mail expected"}
}
func (recorderSession) Rcpt(string, *smtp.RcptOptions) error { return errors.New("no mail expected") }
func (recorderSession) Data(io.Reader) error                 { return errors.New("no mail expected") }
func (recorderSession) Reset()                               {}
func (recorderSession) Logout() error                        { return nil }

type discardLog struct{}

func (discardLog) Printf(string, ...any) {}
func (discardLog) Println(...any)        {}

// Every attempt shows the certificate the server sends at that moment, not
// the one of a TLS session resumed from an earlier attempt: here the
// server's certificate changes between two attempts with the same options.
func TestCheckTLSAttemptSeesCurrentCertificate(t *testing.T) {
	first, _ := testServerTLS(t, "mx.test")
	renewed, _ := testServerTLS(t, "mx.test", "renewed.mx.test")
	var mu sync.Mutex
	current := &first.Certificates[0]
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		return current, nil
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveSMTP(t, ln, cfg)
	o := &checkOptions{helo: "checker.test", timeout: 5 * time.Second}
	policy := tlsupgrade.Policy{Level: tlsupgrade.LevelOpportunistic}
	for i, want := range []*tls.Certificate{&first.Certificates[0], &renewed.Certificates[0]} {
		mu.Lock()
		current = want
		mu.Unlock()
		a := o.attempt(t.Context(), ln.Addr().String(), "mx.test", policy, nil)
		if !a.OK || a.Certificate == nil {
			t.Fatalf("attempt %d: %+v", i+1, a)
		}
		if got, want := a.Certificate.Names, want.Leaf.DNSNames; !slices.Equal(got, want) {
			t.Errorf("attempt %d reported the certificate for %q, want the one the server sends now, for %q", i+1, got, want)
		}
	}
}
