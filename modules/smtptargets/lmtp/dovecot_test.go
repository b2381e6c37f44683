package lmtp_test

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// dovecot is a private Dovecot that takes LMTP on a unix socket and on a
// loopback TCP port and stores the mail of alice, bob and carol (whose
// quota is full) in Maildirs.
type dovecot struct {
	t      *testing.T
	bin    string
	dir    string
	conf   string
	socket string // unix socket path
	tcp    string // 127.0.0.1:port
	cmd    *exec.Cmd
}

// startDovecot writes a config into a temp directory and starts Dovecot
// with it. With cert, it offers STARTTLS with that certificate; extra
// lines go at the end of the config.
func startDovecot(t *testing.T, cert *tls.Certificate, extra ...string) *dovecot {
	t.Helper()
	bin := testutil.RequireTool(t, "dovecot")
	if _, err := os.Stat("/usr/lib/dovecot/lmtp"); err != nil {
		if testutil.InCI() {
			t.Fatal("dovecot-lmtpd is not installed; .ci/run must install it")
		}
		t.Skip("dovecot-lmtpd is not installed (install it to run this test; CI does)")
	}
	internal, login, uid, gid := dovecotUsers(t)
	dir := t.TempDir()
	// The mail processes run as the mail user, which must reach the
	// Maildirs through the test's directories.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mail := filepath.Join(dir, "mail")
	if err := os.Mkdir(mail, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mail, uid, gid); err != nil {
		t.Fatal(err)
	}
	var users strings.Builder
	for _, u := range []string{"alice", "bob"} {
		fmt.Fprintf(&users, "%s::%d:%d::%s::\n", u, uid, gid, filepath.Join(mail, u))
	}
	// carol's quota is full for any message: Dovecot refuses her after
	// the data, in her own reply.
	fmt.Fprintf(&users, "carol::%d:%d::%s::userdb_quota_rule=*:storage=10B\n", uid, gid, filepath.Join(mail, "carol"))
	usersFile := filepath.Join(dir, "users")
	writeFile(t, usersFile, users.String())

	d := &dovecot{t: t, bin: bin, dir: dir, conf: filepath.Join(dir, "dovecot.conf"),
		socket: filepath.Join(dir, "run", "lmtp"), tcp: "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))}
	ssl := "ssl = no"
	if cert != nil {
		certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})))
		der, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
		ssl = fmt.Sprintf("ssl = yes\nssl_cert = <%s\nssl_key = <%s", certFile, keyFile)
	}
	_, port, _ := net.SplitHostPort(d.tcp)
	writeFile(t, d.conf, fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = lmtp
mail_plugins = quota
plugin {
  quota = maildir:User quota
}
%[2]s
default_internal_user = %[3]s
default_internal_group = %[3]s
default_login_user = %[4]s
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:%[1]s/mail/%%n
passdb {
  driver = passwd-file
  args = username_format=%%n %[5]s
}
userdb {
  driver = passwd-file
  args = username_format=%%n %[5]s
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = %[6]s
  }
}
%[7]s
`, dir, ssl, internal, login, usersFile, port, strings.Join(extra, "\n")))
	d.start()
	t.Cleanup(d.stop)
	return d
}

// dovecotUsers returns the system users Dovecot runs as and the uid and
// gid of the mail: Dovecot's own users when we are root, else ourselves.
func dovecotUsers(t *testing.T) (internal, login string, uid, gid int) {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	internal, login = me.Username, me.Username
	if me.Uid == "0" {
		internal, login = "dovecot", "dovenull"
	}
	u, err := user.Lookup(internal)
	if err != nil {
		t.Fatalf("dovecot's user: %v", err)
	}
	if _, err := user.Lookup(login); err != nil {
		t.Fatalf("dovecot's login user: %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return internal, login, uid, gid
}

// start runs Dovecot in the foreground and waits until both listeners
// take connections.
func (d *dovecot) start() {
	d.t.Helper()
	cmd := exec.Command(d.bin, "-F", "-c", d.conf)
	out, err := os.OpenFile(filepath.Join(d.dir, "dovecot.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = testutil.ChildAttr()
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("starting dovecot: %v", err)
	}
	d.cmd = cmd
	testutil.Eventually(d.t, 30*time.Second, "dovecot's LMTP listeners", func() bool {
		for _, a := range [][2]string{{"unix", d.socket}, {"tcp", d.tcp}} {
			c, err := net.DialTimeout(a[0], a[1], time.Second)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
}

// stop ends Dovecot by its PID and waits until it has exited.
func (d *dovecot) stop() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	_ = d.cmd.Wait()
	d.cmd = nil
	if d.t.Failed() {
		log, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
		out, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.out"))
		d.t.Logf("dovecot log:\n%s%s", log, out)
	}
}

// mail returns the messages Dovecot stored for a user.
func (d *dovecot) mail(user string) []string {
	d.t.Helper()
	return readMaildir(d.t, filepath.Join(d.dir, "mail", user))
}

// readMaildir returns the new messages in a Maildir.
func readMaildir(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
