package ldap

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// slapd is an OpenLDAP server run by a test: its own config, database
// and TLS certificate (from a CA made for the test) in a temporary
// directory, listening on loopback with ldap://, ldaps:// and ldapi://.
type slapd struct {
	t        *testing.T
	dir      string
	conf     string
	ldapURL  string // plain, with StartTLS offered
	ldapsURL string
	ldapiURL string
	caFile   string // the CA that signed the server's certificate
	log      string
	bin      string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
}

const (
	testSuffix   = "dc=example,dc=test"
	testBindDN   = "cn=gateway," + testSuffix
	testPassword = "gateway-secret"
)

// testEntries are the directory's contents: two users and the account the
// gateway binds as. Anonymous clients may only bind (see the access rules).
const testEntries = `dn: dc=example,dc=test
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=test
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Example
mail: alice@example.test

dn: uid=bob,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Example
mail: bob@example.test

dn: cn=gateway,dc=example,dc=test
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: gateway
userPassword: ` + testPassword + "\n"

// startSlapd sets up and starts a slapd; it is stopped when the test ends.
// Without slapd installed the test is skipped (failed under CI=true).
func startSlapd(t *testing.T) *slapd {
	t.Helper()
	bin := testutil.RequireTool(t, "slapd")
	slapadd := testutil.RequireTool(t, "slapadd")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	ca := testutil.NewCA(t)
	cert := ca.Issue(t, "127.0.0.1", "ldap.example.test")
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "cert.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})))
	writeFile(t, filepath.Join(dir, "key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})))

	s := &slapd{
		t:        t,
		dir:      dir,
		conf:     filepath.Join(dir, "slapd.conf"),
		ldapURL:  fmt.Sprintf("ldap://127.0.0.1:%d", testutil.FreePort(t)),
		ldapsURL: fmt.Sprintf("ldaps://127.0.0.1:%d", testutil.FreePort(t)),
		ldapiURL: "ldapi://" + url.PathEscape(filepath.Join(dir, "ldapi")),
		caFile:   ca.PEMFile(t),
		log:      filepath.Join(dir, "slapd.log"),
	}
	writeFile(t, s.conf, fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile %[1]s/cert.pem
TLSCertificateKeyFile %[1]s/key.pem
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
database mdb
suffix "%[2]s"
directory %[1]s/db
maxsize 10485760
`, dir, testSuffix))
	writeFile(t, filepath.Join(dir, "entries.ldif"), testEntries)
	if out, err := exec.Command(slapadd, "-f", s.conf, "-l", filepath.Join(dir, "entries.ldif")).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v\n%s", err, out)
	}

	s.bin = bin
	t.Cleanup(func() { // after the stop
		if t.Failed() {
			out, _ := os.ReadFile(s.log)
			t.Logf("slapd log:\n%s", tail(string(out), 40))
		}
	})
	s.start()
	return s
}

// start runs slapd on the set-up directory and waits until it listens; it
// is stopped when the test ends.
func (s *slapd) start() {
	s.t.Helper()
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	// -d stats: in the foreground, logging connections and operations
	// (which the tests count) to stderr.
	cmd := exec.Command(s.bin, "-f", s.conf, "-d", "stats",
		"-h", strings.Join([]string{s.ldapURL + "/", s.ldapsURL + "/", s.ldapiURL}, " "))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = testutil.ChildAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.t.Fatalf("starting slapd: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	s.t.Cleanup(s.stop)
	for _, u := range []string{s.ldapURL, s.ldapsURL} {
		s.waitListening(u)
	}
}

// waitListening waits until slapd accepts connections at u, or has exited.
func (s *slapd) waitListening(u string) {
	s.t.Helper()
	addr := strings.TrimPrefix(strings.TrimPrefix(u, "ldaps://"), "ldap://")
	testutil.Eventually(s.t, 15*time.Second, "slapd listening on "+addr, func() bool {
		select {
		case <-s.exited:
			s.t.Fatal("slapd exited")
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// stop kills slapd by its PID and waits until it is gone (its ports are
// closed then).
func (s *slapd) stop() {
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// searches counts the search operations slapd has logged. slapd logs an
// operation when it receives it, so every search that a client has had
// an answer to is counted.
func (s *slapd) searches() int { return s.logCount(" SRCH base=") }

// logCount counts the occurrences of substr in slapd's log.
func (s *slapd) logCount(substr string) int {
	s.t.Helper()
	out, err := os.ReadFile(s.log)
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.Count(string(out), substr)
}

// silentListener returns the address of a loopback listener that accepts
// connections and never answers, until the test ends.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// dropProxy forwards loopback connections to slapd. After drop, the next
// bytes a client sends on a connection opened before are not forwarded:
// that connection is closed instead, as a server (or a firewall) ending an
// idle connection does while the client is writing to it.
type dropProxy struct {
	addr string
	drop chan struct{} // a token in it: close the next connection that sends
}

func startDropProxy(t *testing.T, upstream string) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{addr: ln.Addr().String(), drop: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", strings.TrimPrefix(upstream, "ldap://"))
			if err != nil {
				c.Close()
				continue
			}
			wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
			wg.Go(func() { p.forward(c, u) })
		}
	})
	return p
}

// forward copies what the client c sends to u, until a drop.
func (p *dropProxy) forward(c, u net.Conn) {
	defer u.Close()
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-p.drop:
			return
		default:
		}
		if _, err := u.Write(buf[:n]); err != nil {
			return
		}
	}
}
