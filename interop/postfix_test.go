package interop

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// postfixInstance is a private Postfix: its own config directory, queue,
// data directory and log file in a temporary directory, smtpd on one free
// loopback port, no chroot. It is started with `postfix -c DIR start` and
// stopped with `postfix -c DIR stop` (then by the master's PID if need
// be) when the test ends, also on failure. The system instance
// (/etc/postfix) is never read, started or stopped.
type postfixInstance struct {
	t        *testing.T
	bin      string
	dir      string // the instance's root: conf/, queue/, data/, maillog
	conf     string
	queue    string
	maillog  string
	port     int
	settings map[string]string // main.cf beyond the base settings
	uid, gid int               // the postfix user
	running  bool
	// registered: the stop is registered with t.Cleanup.
	registered bool
}

// newPostfix prepares an instance; settings are added to (or override)
// the base main.cf. Call start to run it.
func newPostfix(t *testing.T, settings map[string]string) *postfixInstance {
	t.Helper()
	requireRoot(t)
	bin := requireTool(t, "postfix")
	requireTool(t, "postconf") // used by `postfix start`
	u, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("no postfix user (is the postfix package installed?): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// Postfix daemons run as the postfix user and must reach the queue
	// and the files in it: a 0755 directory of our own, not t.TempDir
	// (0700). Removed after the instance has stopped.
	dir, err := os.MkdirTemp("", "interop-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &postfixInstance{
		t: t, bin: bin, dir: dir,
		conf:     filepath.Join(dir, "conf"),
		queue:    filepath.Join(dir, "queue"),
		maillog:  filepath.Join(dir, "maillog"),
		port:     freePort(t),
		settings: map[string]string{},
		uid:      uid, gid: gid,
	}
	for k, v := range settings {
		p.settings[k] = v
	}
	for _, d := range []string{dir, p.conf, p.queue} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p.mkdirOwned("data")
	return p
}

// addr is the smtpd address.
func (p *postfixInstance) addr() string { return loopback(p.port) }

// mkdirOwned creates a directory of the instance owned by the postfix
// user (data directory, virtual mailboxes) and returns its path.
func (p *postfixInstance) mkdirOwned(name string) string {
	p.t.Helper()
	d := filepath.Join(p.dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Chown(d, p.uid, p.gid); err != nil {
		p.t.Fatal(err)
	}
	return d
}

// writeFile writes a file into the config directory and returns its path.
func (p *postfixInstance) writeFile(name string, data []byte, mode os.FileMode) string {
	p.t.Helper()
	path := filepath.Join(p.conf, name)
	if err := os.WriteFile(path, data, mode); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// virtualMailboxes makes the instance store mail for the given users of
// domain in Maildirs under <instance>/vmail/<domain>/<user>/, and refuse
// other users of the domain; it returns the vmail directory.
func (p *postfixInstance) virtualMailboxes(domain string, users ...string) string {
	p.t.Helper()
	vmail := p.mkdirOwned("vmail")
	var table strings.Builder
	for _, u := range users {
		fmt.Fprintf(&table, "%s@%s %s/%s/\n", u, domain, domain, u)
	}
	vmap := p.writeFile("vmailbox", []byte(table.String()), 0o644)
	for k, v := range map[string]string{
		"virtual_mailbox_domains": domain,
		"virtual_mailbox_base":    vmail,
		// texthash: needs no postmap.
		"virtual_mailbox_maps": "texthash:" + vmap,
		"virtual_uid_maps":     "static:" + strconv.Itoa(p.uid),
		"virtual_gid_maps":     "static:" + strconv.Itoa(p.gid),
		"virtual_minimum_uid":  strconv.Itoa(p.uid),
	} {
		p.settings[k] = v
	}
	return vmail
}

func (p *postfixInstance) mainCF() string {
	base := map[string]string{
		"compatibility_level":   "3.6",
		"queue_directory":       p.queue,
		"data_directory":        filepath.Join(p.dir, "data"),
		"mail_owner":            "postfix",
		"setgid_group":          "postdrop",
		"inet_interfaces":       "127.0.0.1",
		"inet_protocols":        "ipv4",
		"myhostname":            "postfix.example.internal",
		"mydomain":              "example.internal",
		"mydestination":         "",
		"mynetworks":            "127.0.0.0/8",
		"relay_domains":         "",
		"alias_maps":            "",
		"alias_database":        "",
		"biff":                  "no",
		"maillog_file":          p.maillog,
		"maillog_file_prefixes": p.dir,
		// No address rewriting in headers of mail from SMTP clients: the
		// message must pass through unchanged.
		"local_header_rewrite_clients": "",
		"smtpd_relay_restrictions":     "permit_mynetworks, reject_unauth_destination",
		"smtp_tls_loglevel":            "1",
		"smtpd_tls_loglevel":           "1",
		// Retry soon: a deferred message is a test failure anyway, but
		// the log then says why.
		"queue_run_delay":      "1s",
		"minimal_backoff_time": "1s",
		"maximal_backoff_time": "2s",
	}
	for k, v := range p.settings {
		base[k] = v
	}
	keys := make([]string, 0, len(base))
	for k := range base {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# private Postfix instance of the caddy-smtp interop tests\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, base[k])
	}
	return b.String()
}

// masterCF runs every service unchrooted; smtpd listens on our port only.
func (p *postfixInstance) masterCF() string {
	return fmt.Sprintf(`# service type private unpriv chroot wakeup maxproc command
127.0.0.1:%d inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
local      unix  - n n -  - local
virtual    unix  - n n -  - virtual
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
`, p.port)
}

// start writes main.cf and master.cf and starts the instance.
func (p *postfixInstance) start() {
	p.t.Helper()
	p.writeFile("main.cf", []byte(p.mainCF()), 0o644)
	p.writeFile("master.cf", []byte(p.masterCF()), 0o644)
	if !p.registered {
		p.registered = true
		p.t.Cleanup(p.stop)
	}
	p.running = true // from here on, stop has something to do
	res := runTool(p.t, 2*time.Minute, nil, nil, p.bin, "-c", p.conf, "start")
	if res.code != 0 {
		p.t.Fatalf("postfix -c %s start: exit %d\n%s\n%s", p.conf, res.code, res.out, p.log())
	}
	waitForPort(p.t, p.addr(), 30*time.Second)
}

// masterPID reads the master's PID from its pid file (0 if none).
func (p *postfixInstance) masterPID() int {
	raw, err := os.ReadFile(filepath.Join(p.queue, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return pid
}

// stop stops the instance with `postfix -c DIR stop`; if its master is
// still alive after 20s it is killed by its PID.
func (p *postfixInstance) stop() {
	if !p.running {
		return
	}
	p.running = false
	pid := p.masterPID()
	res := runTool(p.t, time.Minute, nil, nil, p.bin, "-c", p.conf, "stop")
	if res.code != 0 && pid > 0 {
		p.t.Errorf("postfix -c %s stop: exit %d\n%s", p.conf, res.code, res.out)
	}
	if pid > 0 {
		deadline := time.Now().Add(20 * time.Second)
		for processAlive(pid) {
			if time.Now().After(deadline) {
				p.t.Errorf("postfix master (pid %d) still running 20s after stop; killing it", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
			pause(100 * time.Millisecond)
		}
	}
	if p.t.Failed() {
		p.t.Logf("postfix log (%s):\n%s", p.maillog, tail(p.log(), 80))
	}
}

// restart stops the instance and starts it again with changed settings.
func (p *postfixInstance) restart(changes map[string]string) {
	p.t.Helper()
	p.stop()
	for k, v := range changes {
		p.settings[k] = v
	}
	p.start()
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// log returns the instance's log file.
func (p *postfixInstance) log() string {
	raw, _ := os.ReadFile(p.maillog)
	return string(raw)
}

// waitLog waits until a log line contains every string of want and
// returns the first such line.
func (p *postfixInstance) waitLog(limit time.Duration, want ...string) string {
	p.t.Helper()
	var found string
	testutil.Eventually(p.t, limit, fmt.Sprintf("postfix log line with %q", want), func() bool {
		found = p.findLog(want...)
		return found != ""
	})
	return found
}

// findLog returns the first log line containing every string of want.
func (p *postfixInstance) findLog(want ...string) string {
	for _, line := range strings.Split(p.log(), "\n") {
		ok := true
		for _, w := range want {
			if !strings.Contains(line, w) {
				ok = false
				break
			}
		}
		if ok {
			return line
		}
	}
	return ""
}

// postfixQueueID returns the Postfix queue ID of the message smtpd accepted:
// swaks prints Postfix's "250 2.0.0 Ok: queued as ID".
func postfixQueueID(t *testing.T, swaksOut string) string {
	t.Helper()
	const marker = "queued as "
	i := strings.LastIndex(swaksOut, marker)
	if i < 0 {
		t.Fatalf("no queue ID in the swaks transcript:\n%s", swaksOut)
	}
	id := swaksOut[i+len(marker):]
	if j := strings.IndexAny(id, " \r\n"); j >= 0 {
		id = id[:j]
	}
	return id
}
