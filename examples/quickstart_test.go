// Package examples_test runs the example Caddyfiles the way the README
// tells a new user to, with their ports and paths moved into the test's
// own space.
package examples_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/emersion/go-smtp"

	_ "github.com/caddy-smtp/caddy-smtp"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// TestQuickstartTwoTLSHops runs examples/quickstart/Caddyfile: a message
// sent with STARTTLS to the gateway is queued, relayed with STARTTLS to the
// backend server and stored in the Maildir, with one Received header per
// hop, both recording TLS.
func TestQuickstartTwoTLSHops(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("quickstart", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	cfgJSON, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Fatalf("warnings: %v", warnings)
	}
	dir := t.TempDir()
	mail := filepath.Join(dir, "mail")
	gateway, implicit, backend := freePort(t), freePort(t), freePort(t)
	s := strings.NewReplacer(
		"127.0.0.1:2525", "127.0.0.1:"+gateway,
		"127.0.0.1:2465", "127.0.0.1:"+implicit,
		"localhost:2526", "localhost:"+backend,
		"127.0.0.1:2526", "127.0.0.1:"+backend,
		`"./mail"`, fmt.Sprintf("%q", mail),
	).Replace(string(cfgJSON))
	var cfg map[string]any
	if err := json.Unmarshal([]byte(s), &cfg); err != nil {
		t.Fatal(err)
	}
	storage := filepath.Join(dir, "storage")
	cfg["storage"] = map[string]any{"module": "file_system", "root": storage}
	cfg["admin"] = map[string]any{"disabled": true}
	logFile := filepath.Join(dir, "log.json")
	cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{
		"level": "INFO", "writer": map[string]any{"output": "file", "filename": logFile}, "encoder": map[string]any{"format": "json"}}}}
	cfg["apps"].(map[string]any)["smtp"].(map[string]any)["queue"] = map[string]any{"path": filepath.Join(dir, "queue")}
	raw, _ := json.Marshal(cfg)
	if err := caddy.Load(raw, true); err != nil {
		t.Fatal(err)
	}
	defer caddy.Stop()

	rootPEM, err := os.ReadFile(filepath.Join(storage, "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	c, err := smtp.DialStartTLS("127.0.0.1:"+gateway, &tls.Config{ServerName: "localhost", RootCAs: roots})
	if err != nil {
		t.Fatalf("STARTTLS to the gateway: %v", err)
	}
	msg := "Subject: quickstart\r\nMessage-ID: <quickstart@test>\r\n\r\nHello through two hops.\r\n"
	if err := c.SendMail("someone@sender.example", []string{"a@example.test"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("sending: %v", err)
	}
	c.Quit()

	var files []string
	deadline := time.Now().Add(20 * time.Second)
	for len(files) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no message in the Maildir")
		}
		tick := time.NewTimer(20 * time.Millisecond)
		<-tick.C
		files, _ = filepath.Glob(filepath.Join(mail, "new", "*"))
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	if n := strings.Count(text, "\r\nReceived: from "); n != 2 {
		t.Fatalf("%d Received headers, want 2:\n%s", n, text)
	}
	if n := strings.Count(text, "(using TLSv1.3 with cipher "); n != 2 {
		t.Fatalf("%d hops recorded TLS 1.3, want 2:\n%s", n, text)
	}
	if !strings.HasSuffix(text, msg) {
		t.Fatalf("message changed in transit:\n%s", text)
	}
	// The relay hop verified the backend's certificate against the
	// internal CA (trust_pool): no verification error in the log.
	logged, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var delivery map[string]any
	for _, line := range strings.Split(string(logged), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "delivery" && l["relay"] == "localhost" {
			delivery = l
		}
	}
	if testing.Verbose() {
		t.Logf("log:\n%s", logged)
	}
	if delivery == nil || delivery["status"] != "delivered" || delivery["tls_verified"] != true || delivery["tls_verify_error"] != nil {
		t.Fatalf("delivery log line %v, want delivered with tls_verified true", delivery)
	}
}
