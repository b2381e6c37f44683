package smtpstatus_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	_ "github.com/caddyserver/caddy/v2/modules/caddypki"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpstatus"
	_ "github.com/caddy-smtp/caddy-smtp/modules/standard"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// The page's login, checked by Caddy's basic_auth.
const (
	testUser     = "admin"
	testPassword = "status-secret"
	testHost     = "mx.example.internal"
)

// receiver is a mail server the gateway relays to: with tlsCert, it
// offers STARTTLS. It refuses bounce@ with 550 and defer@ with 451 at
// RCPT and takes any other recipient.
type receiver struct {
	addr string
	mu   sync.Mutex
	got  []string // recipients of the messages received
}

type receiverBackend struct{ r *receiver }

type receiverSession struct {
	r     *receiver
	rcpts []string
}

func (b receiverBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	return &receiverSession{r: b.r}, nil
}

func (s *receiverSession) Mail(string, *smtp.MailOptions) error { return nil }

func (s *receiverSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	switch {
	case strings.HasPrefix(to, "bounce@"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
	case strings.HasPrefix(to, "defer@"):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try again later"}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *receiverSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.r.mu.Lock()
	s.r.got = append(s.r.got, s.rcpts...)
	s.r.mu.Unlock()
	return nil
}

func (s *receiverSession) Reset()        { s.rcpts = nil }
func (s *receiverSession) Logout() error { return nil }

func startReceiver(t *testing.T, cert *tls.Certificate) *receiver {
	t.Helper()
	r := new(receiver)
	srv := smtp.NewServer(receiverBackend{r})
	srv.Domain = "receiver.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *receiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// gateway is a running Caddy with an smtp app that relays tls-rcpt.test
// to a receiver over verified STARTTLS and plain-rcpt.test to one without
// TLS, keeps the senders' domains (tls.example, plain.example: the DSNs)
// in a Maildir, and an http app that serves smtp_status behind
// basic_auth.
type gateway struct {
	t       *testing.T
	dir     string
	storage string // Caddy's storage, outside dir (see testutil.StorageDir)
	config  map[string]any
	smtp    string // the SMTP server's address
	url     string // the status page
	tlsRcpt *receiver
	plain   *receiver
}

// startGateway loads the config; extraRoutes adds more http routes that
// serve the handler (two handlers in one config).
func startGateway(t *testing.T, extraRoutes ...string) *gateway {
	t.Helper()
	g := &gateway{t: t, dir: t.TempDir(), storage: testutil.StorageDir(t)}
	ca := testutil.NewCA(t)
	cert := ca.Issue(t, "127.0.0.1")
	g.tlsRcpt = startReceiver(t, &cert)
	g.plain = startReceiver(t, nil)
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	status := func(path string) map[string]any {
		return map[string]any{
			"match": []any{map[string]any{"path": []string{path}}},
			"handle": []any{
				map[string]any{"handler": "authentication", "providers": map[string]any{"http_basic": map[string]any{
					"hash":     map[string]any{"algorithm": "bcrypt"},
					"accounts": []any{map[string]any{"username": testUser, "password": string(hash)}},
				}}},
				map[string]any{"handler": "smtp_status"},
			},
		}
	}
	routes := []any{status("/status")}
	for _, p := range extraRoutes {
		routes = append(routes, status(p))
	}
	g.config = map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": g.storage},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps": map[string]any{
			"pki": map[string]any{"certificate_authorities": map[string]any{"local": map[string]any{"install_trust": false}}},
			"http": map[string]any{"servers": map[string]any{"status": map[string]any{
				"listen":          []string{"127.0.0.1:0"},
				"automatic_https": map[string]any{"disable": true},
				"routes":          routes,
			}}},
			"smtp": map[string]any{
				"hostname": testHost,
				"queue":    map[string]any{"path": filepath.Join(g.dir, "queue"), "retry_initial": "1h"},
				"servers":  map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": "127.0.0.1:0"}}}},
				"routes": []any{
					map[string]any{"domains": []string{"tls-rcpt.test"}, "deliver": map[string]any{
						"target": "relay", "hosts": []string{g.tlsRcpt.addr}, "tls": "verify", "ca_file": ca.PEMFile(t)}},
					map[string]any{"domains": []string{"plain-rcpt.test"}, "deliver": map[string]any{
						"target": "relay", "hosts": []string{g.plain.addr}}},
					map[string]any{"domains": []string{"tls.example", "plain.example"}, "deliver": map[string]any{
						"target": "maildir", "path": filepath.Join(g.dir, "mail"), "create_mailboxes": true}},
				},
			},
		},
	}
	g.load()
	t.Cleanup(func() { _ = caddy.Stop() })
	return g
}

// load (re)loads the gateway's config and finds its addresses.
func (g *gateway) load() {
	g.t.Helper()
	raw, err := json.Marshal(g.config)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := caddy.Load(raw, true); err != nil {
		g.t.Fatalf("loading config: %v", err)
	}
	mod, err := caddy.ActiveContext().App("smtp")
	if err != nil {
		g.t.Fatal(err)
	}
	g.smtp = mod.(*smtpapp.App).Servers["mx"].Addrs()[0].String()
	g.url = "http://" + httpAddr(g.t) + "/status"
}

// httpAddr is the address of the running http app's server.
func httpAddr(t *testing.T) string {
	t.Helper()
	mod, err := caddy.ActiveContext().App("http")
	if err != nil {
		t.Fatal(err)
	}
	return mod.(*caddyhttp.App).Servers["status"].Listeners()[0].Addr().String()
}

// rootPool returns Caddy's internal CA root, which signed the SMTP
// server's certificate.
func (g *gateway) rootPool() *x509.CertPool {
	g.t.Helper()
	pem, err := os.ReadFile(filepath.Join(g.storage, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		g.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		g.t.Fatal("no certificate in root.crt")
	}
	return pool
}

// send submits one message, over STARTTLS (verified against the internal
// CA) or in plaintext.
func (g *gateway) send(starttls bool, from string, rcpts ...string) {
	g.t.Helper()
	var c *smtp.Client
	var err error
	if starttls {
		c, err = smtp.DialStartTLS(g.smtp, &tls.Config{ServerName: testHost, RootCAs: g.rootPool()})
	} else {
		c, err = smtp.Dial(g.smtp)
	}
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: test\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <%d@test>\r\n\r\nHello.\r\n",
		from, rcpts[0], time.Now().UnixNano())
	if err := c.SendMail(from, rcpts, strings.NewReader(msg)); err != nil {
		g.t.Fatalf("sending from %s: %v", from, err)
	}
	_ = c.Quit()
}

// get fetches the page (or its JSON) with the test login; it returns
// the response and its body.
func (g *gateway) get(query string, login bool) (*http.Response, []byte) {
	g.t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.url+query, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	if login {
		req.SetBasicAuth(testUser, testPassword)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	return resp, body
}

// status reads the JSON variant of the page.
func (g *gateway) status() *smtpstatus.Status {
	g.t.Helper()
	resp, body := g.get("?format=json", true)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	s := new(smtpstatus.Status)
	if err := json.Unmarshal(body, s); err != nil {
		g.t.Fatal(err)
	}
	return s
}

// share returns a domain's row of a TLS table.
func share(list []smtpstatus.DomainShare, domain string) (smtpstatus.TLSCount, error) {
	for _, d := range list {
		if d.Domain == domain {
			return d.TLSCount, nil
		}
	}
	return smtpstatus.TLSCount{}, errors.New(domain + " is not in the table")
}

// scriptedRun sends the test's mail: two messages over STARTTLS from
// a@tls.example (to the TLS and the plaintext receiver) and one in
// plaintext from b@plain.example to a recipient that is refused with 550
// (bounced) and one refused with 451 (deferred); the bounce's DSN is
// delivered to plain.example's Maildir. It waits until all of that is
// counted.
func (g *gateway) scriptedRun() *smtpstatus.Status {
	g.t.Helper()
	g.send(true, "a@tls.example", "x@tls-rcpt.test")
	g.send(true, "a@tls.example", "y@plain-rcpt.test")
	g.send(false, "b@plain.example", "bounce@tls-rcpt.test", "defer@tls-rcpt.test")
	var s *smtpstatus.Status
	testutil.Eventually(g.t, 20*time.Second, "the deliveries of the scripted run on the page", func() bool {
		s = g.status()
		return s.Totals24h.Delivered >= 3 && s.Totals24h.Deferred >= 1 && s.Totals24h.Bounced >= 1
	})
	return s
}
