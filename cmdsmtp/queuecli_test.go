package cmdsmtp

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpadmin"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// The tests of this file run the commands as a built caddy binary against
// Caddy processes started from the same binary.

var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// caddyBinary builds ./cmd/caddy once per test binary.
func caddyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the caddy binary")
	}
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "cmdsmtp-caddy-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "caddy")
		out, err := exec.Command("go", "build", "-o", built.bin, "../cmd/caddy").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build ../cmd/caddy: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// cliGateway is a Caddy process with an smtp app and its admin endpoint.
type cliGateway struct {
	t     *testing.T
	bin   string
	dir   string
	admin string // host:port
	smtp  string
	cmd   *exec.Cmd
	done  chan struct{}
	log   string
}

// config returns a config whose example.test and other.test mail goes to
// deliver, with the spool at spool (in the store given, "" for the
// default) and retries an hour apart (only the CLI makes them sooner).
func (g *cliGateway) config(spool, store string, deliver map[string]any) map[string]any {
	q := map[string]any{"path": spool, "retry_initial": "1h", "retry_max": "1h"}
	if store != "" {
		q["store"] = store
	}
	return map[string]any{
		"admin":   map[string]any{"listen": g.admin, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(g.dir, "storage")},
		"apps": map[string]any{"smtp": map[string]any{
			"hostname":               "mx.test",
			"automatic_certificates": false,
			"servers": map[string]any{"mx": map[string]any{
				"listen": []any{map[string]any{"address": g.smtp, "tls": "off"}},
			}},
			"routes": []any{map[string]any{"domains": []string{"example.test", "other.test"}, "deliver": deliver}},
			"queue":  q,
		}},
	}
}

func newCLIGateway(t *testing.T) *cliGateway {
	return &cliGateway{t: t, bin: caddyBinary(t), dir: t.TempDir(),
		admin: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		smtp:  fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))}
}

// deadRelay is a relay target where nothing listens: every attempt is
// deferred.
func deadRelay(t *testing.T) map[string]any {
	return map[string]any{"target": "relay", "hosts": []string{fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))}}
}

func (g *cliGateway) maildir() map[string]any {
	return map[string]any{"target": "maildir", "path": filepath.Join(g.dir, "mail", "{local}"), "create_mailboxes": true}
}

// writeConfig writes a config file and returns its path.
func (g *cliGateway) writeConfig(name string, cfg map[string]any) string {
	raw, err := json.Marshal(cfg)
	if err != nil {
		g.t.Fatal(err)
	}
	p := filepath.Join(g.dir, name)
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		g.t.Fatal(err)
	}
	return p
}

// start runs `caddy run` with cfg until stop (or the end of the test).
func (g *cliGateway) start(cfg map[string]any) {
	g.t.Helper()
	path := g.writeConfig("caddy.json", cfg)
	g.log = filepath.Join(g.dir, "caddy.log")
	logf, err := os.OpenFile(g.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		g.t.Fatal(err)
	}
	g.cmd = exec.Command(g.bin, "run", "--config", path)
	g.cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(g.dir, "xdg"), "XDG_DATA_HOME="+filepath.Join(g.dir, "xdg"))
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	g.cmd.SysProcAttr = testutil.ChildAttr()
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.done = make(chan struct{})
	go func() {
		_ = g.cmd.Wait()
		logf.Close()
		close(g.done)
	}()
	g.t.Cleanup(g.stop)
	testutil.WaitForPort(g.t, g.smtp, 30*time.Second)
	testutil.WaitForPort(g.t, g.admin, 30*time.Second)
}

// stop ends Caddy gracefully (SIGTERM) and waits for it to exit.
func (g *cliGateway) stop() {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(20 * time.Second):
		g.t.Errorf("caddy did not exit 20s after SIGTERM; killing it")
		_ = g.cmd.Process.Kill()
		<-g.done
	}
	g.cmd = nil
	if g.t.Failed() {
		out, _ := os.ReadFile(g.log)
		g.t.Logf("caddy log:\n%s", out)
	}
}

// submit sends a message over SMTP.
func (g *cliGateway) submit(from string, to ...string) {
	g.t.Helper()
	c, err := smtp.Dial(g.smtp)
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	msg := fmt.Sprintf("From: <%s>\r\nSubject: to %s\r\n\r\nbody\r\n", from, strings.Join(to, ", "))
	if err := c.SendMail(from, to, strings.NewReader(msg)); err != nil {
		g.t.Fatal(err)
	}
}

// queue returns the queue as the admin API lists it.
func (g *cliGateway) queue() []queue.Snapshot {
	g.t.Helper()
	resp, err := http.Get("http://" + g.admin + "/smtp/queue")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var msgs []queue.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&msgs); err != nil {
		g.t.Fatal(err)
	}
	return msgs
}

// waitDeferred waits until n messages are queued and each had an attempt.
func (g *cliGateway) waitDeferred(n int) []queue.Snapshot {
	g.t.Helper()
	var msgs []queue.Snapshot
	testutil.Eventually(g.t, 20*time.Second, fmt.Sprintf("%d deferred messages", n), func() bool {
		msgs = g.queue()
		for _, m := range msgs {
			if m.Attempts == 0 || m.State == queue.StateDelivering {
				return false
			}
		}
		return len(msgs) == n
	})
	return msgs
}

// run runs the binary; it returns stdout and stderr, and fails the test
// unless the exit status is as wanted.
func (g *cliGateway) run(wantOK bool, args ...string) (stdout, stderr string) {
	g.t.Helper()
	cmd := exec.Command(g.bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if (err == nil) != wantOK {
		g.t.Fatalf("caddy %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, o.String(), e.String())
	}
	return o.String(), e.String()
}

// queueCmd runs `caddy smtp queue <args> --address <admin>` and returns
// its stdout (wantOK) or stderr.
func (g *cliGateway) queueCmd(wantOK bool, args ...string) string {
	g.t.Helper()
	out, errOut := g.run(wantOK, append(append([]string{"smtp", "queue"}, args...), "--address", g.admin)...)
	if wantOK {
		return out
	}
	return errOut
}

// waitMaildirs waits until u1, u2 and v have a message each.
func (g *cliGateway) waitMaildirs(what string) {
	g.t.Helper()
	testutil.Eventually(g.t, 20*time.Second, what, func() bool {
		for _, box := range []string{"u1", "u2", "v"} {
			if files, _ := filepath.Glob(filepath.Join(g.dir, "mail", box, "new", "*")); len(files) != 1 {
				return false
			}
		}
		return true
	})
}

func idsOf(msgs []queue.Snapshot, match func(queue.Snapshot) bool) []string {
	var ids []string
	for _, m := range msgs {
		if match(m) {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

func fromIs(addr string) func(queue.Snapshot) bool {
	return func(m queue.Snapshot) bool { return m.From == addr }
}

func mustContain(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s: no %q in\n%s", what, w, out)
		}
	}
}

// TestQueueCLI: `caddy smtp queue` as a built binary against a running
// Caddy: filters on list, the summary table, hold and release of several
// IDs and of --all with filters, delete --all by sender, errors printed
// for humans (with the API's message, and a hint when nothing listens at
// the admin address), and requeue delivering after a config reload fixed
// the route.
func TestQueueCLI(t *testing.T) {
	g := newCLIGateway(t)
	spool := filepath.Join(g.dir, "spool")
	g.start(g.config(spool, "", deadRelay(t)))
	g.submit("s@a.test", "u1@example.test")
	g.submit("s@a.test", "u2@example.test", "v@other.test")
	g.submit("t@b.test", "w@other.test")
	msgs := g.waitDeferred(3)
	fromA, fromB := idsOf(msgs, fromIs("s@a.test")), idsOf(msgs, fromIs("t@b.test"))

	out := g.queueCmd(true, "list", "--domain", "other.test")
	mustContain(t, "list --domain", out, "2 message(s)", "u2@example.test (+1)", "w@other.test")
	var listed []queue.Snapshot
	if err := json.Unmarshal([]byte(g.queueCmd(true, "list", "--from", "@b.test", "--json")), &listed); err != nil ||
		len(listed) != 1 || listed[0].ID != fromB[0] {
		t.Errorf("list --from @b.test --json: %v %+v", err, listed)
	}
	if out = g.queueCmd(true, "list", "--older-than", "1h"); !strings.Contains(out, "The queue is empty.") {
		t.Errorf("list --older-than 1h: %s", out)
	}

	out = g.queueCmd(true, "summary")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := [][]string{
		{"DOMAIN", "TOTAL", "0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160-320m", "320m+"},
		{"TOTAL", "3", "3", "0", "0", "0", "0", "0", "0", "0"},
		{"example.test", "2", "2", "0", "0", "0", "0", "0", "0", "0"},
		{"other.test", "2", "2", "0", "0", "0", "0", "0", "0", "0"},
	}
	if len(lines) != len(want) {
		t.Fatalf("summary:\n%s", out)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("summary line %d: %q, want %q", i, got, w)
		}
	}
	if out = g.queueCmd(true, "summary", "--recipients"); !strings.Contains(strings.Join(strings.Fields(out), " "), "TOTAL 4 4 0") {
		t.Errorf("summary --recipients:\n%s", out)
	}
	var sum queue.Summary
	if err := json.Unmarshal([]byte(g.queueCmd(true, "summary", "--json", "--from", "@a.test")), &sum); err != nil ||
		sum.Total.Messages != 2 || sum.Total.Recipients != 3 || len(sum.Domains) != 2 {
		t.Errorf("summary --json --from @a.test: %v %+v", err, sum)
	}

	// Several IDs, then --all with filters.
	out = g.queueCmd(true, append([]string{"hold"}, fromA...)...)
	mustContain(t, "hold of two IDs", out, "held 2 of 2 message(s)")
	if got := idsOf(g.queue(), func(m queue.Snapshot) bool { return m.State == queue.StateHeld }); len(got) != 2 {
		t.Errorf("held after hold of two IDs: %v", got)
	}
	mustContain(t, "list --held", g.queueCmd(true, "list", "--held"), "2 message(s)")
	mustContain(t, "flush --all (held ones are skipped)", g.queueCmd(true, "flush", "--all"), "due now 1 of 3 message(s), 2 skipped (held)")
	mustContain(t, "release --all --held", g.queueCmd(true, "release", "--all", "--held"), "released 2 of 2 message(s)")
	mustContain(t, "delete --all --from", g.queueCmd(true, "delete", "--all", "--from", "@b.test"), "deleted 1 of 1 message(s)")
	if left := g.queue(); len(idsOf(left, fromIs("t@b.test"))) != 0 || len(left) != 2 {
		t.Errorf("after delete --all --from @b.test: %+v", left)
	}

	// Errors: the API's message on one line, per-ID errors, usage.
	errOut := g.queueCmd(false, "show", "NOSUCHMSG")
	if strings.TrimSpace(errOut) != "caddy smtp queue: no such message in the queue: NOSUCHMSG (HTTP 404)" {
		t.Errorf("show of an unknown ID: stderr %q", errOut)
	}
	errOut = g.queueCmd(false, "hold", fromA[0], "NOSUCHMSG")
	mustContain(t, "hold of a queued and an unknown ID", errOut, "caddy smtp queue: failed for 1 message(s):\n  NOSUCHMSG: no such message in the queue")
	out, errOut = g.run(false, "smtp", "queue", "hold", fromA[0], "NOSUCHMSG", "--json", "--address", g.admin)
	var bulk smtpadmin.BulkResult
	if err := json.Unmarshal([]byte(out), &bulk); err != nil || bulk.Matched != 2 || bulk.Done != 1 ||
		len(bulk.Errors) != 1 || bulk.Errors[0].ID != "NOSUCHMSG" || !strings.Contains(errOut, "failed for 1 message(s)") {
		t.Errorf("hold --json of a queued and an unknown ID: %v %+v; stderr %s", err, bulk, errOut)
	}
	for body, want := range map[string]string{
		`{"ids": ["X"], "all": true}`:        "not both",
		`{}`:                                 "give the ids",
		`{"all": true, "bounce": true}`:      "bounce applies to delete",
		`{"all": true, "color": "red"}`:      "unknown field",
		`{"all": true, "older_than": "x"}`:   "request body",
		`{"ids": ["X"], "from": "a@b.test"}`: "not both",
	} {
		resp, err := http.Post("http://"+g.admin+"/smtp/queue/hold", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(raw), want) {
			t.Errorf("POST /smtp/queue/hold %s: %d %s, want 400 with %q", body, resp.StatusCode, raw, want)
		}
	}
	mustContain(t, "list --older-than garbage", g.queueCmd(false, "list", "--older-than", "soon"), `--older-than: "soon" is not a duration`)
	mustContain(t, "delete without IDs", g.queueCmd(false, "delete"), "caddy smtp queue: give the IDs of the messages, or --all")
	mustContain(t, "filters without --all", g.queueCmd(false, "hold", "--from", "x@y.test"), "--all only")
	g.queueCmd(true, "release", fromA[0])
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	_, errOut = g.run(false, "smtp", "queue", "list", "--address", dead)
	mustContain(t, "list without Caddy", errOut, "connection refused; is Caddy running? its admin endpoint is "+dead+"; use --address")
	if strings.Contains(errOut, `{"`) {
		t.Errorf("the error is JSON: %s", errOut)
	}

	// The route is fixed by a reload; requeue delivers at once (the retry
	// would be an hour away).
	g.run(true, "reload", "--config", g.writeConfig("fixed.json", g.config(spool, "", g.maildir())), "--address", g.admin)
	mustContain(t, "requeue --all", g.queueCmd(true, "requeue", "--all"), "requeued 2 of 2 message(s)")
	g.waitMaildirs("the requeued messages in the maildirs")
	testutil.Eventually(t, 10*time.Second, "an empty queue", func() bool { return len(g.queue()) == 0 })
}

// fileState is what a spool file looks like on disk.
type fileState struct {
	size  int64
	mtime time.Time
	sum   [32]byte
}

// spoolState records every file and directory under dir.
func spoolState(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	out := make(map[string]fileState)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := fileState{size: info.Size(), mtime: info.ModTime()}
		if !d.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			st.sum = sha256.Sum256(data)
		}
		out[p] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameState(t *testing.T, what string, before, after map[string]fileState) {
	t.Helper()
	for p, b := range before {
		if a, ok := after[p]; !ok || a != b {
			t.Errorf("%s: %s changed: %+v -> %+v (present %v)", what, p, b, a, ok)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

// TestSpoolCLI: `caddy smtp spool inspect` reads the segment spool of a
// running Caddy and of a stopped one without changing a byte or a time
// of it; `convert` refuses while Caddy runs, then copies every message
// (state, recipients, held domains) into a files spool, leaving the source
// as it was; Caddy started on the converted spool delivers the messages
// and keeps the held one held.
func TestSpoolCLI(t *testing.T) {
	g := newCLIGateway(t)
	spool, converted := filepath.Join(g.dir, "spool"), filepath.Join(g.dir, "converted")
	g.start(g.config(spool, "", deadRelay(t)))
	g.submit("s@a.test", "u1@example.test")
	g.submit("s@a.test", "u2@example.test", "v@other.test")
	g.submit("t@b.test", "w@other.test")
	msgs := g.waitDeferred(3)
	held := idsOf(msgs, fromIs("t@b.test"))[0]
	g.queueCmd(true, "hold", held)
	g.queueCmd(true, "hold-domain", "nowhere.test")

	out, _ := g.run(true, "smtp", "spool", "inspect", spool)
	mustContain(t, "inspect of a running spool", out, "(segments format)", "3 message(s)", held)
	_, errOut := g.run(false, "smtp", "spool", "convert", spool, converted, "--to", "files")
	mustContain(t, "convert of a running spool", errOut, "caddy smtp spool: spool "+spool+" is in use")
	g.stop()

	before := spoolState(t, spool)
	out, _ = g.run(true, "smtp", "spool", "inspect", spool)
	mustContain(t, "inspect", out, "delivery held for nowhere.test", "3 message(s)", "held", "deferred", "u2@example.test (+1)", "t@b.test")
	var listed []queue.Snapshot
	out, _ = g.run(true, "smtp", "spool", "inspect", spool, "--json")
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 3 {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}
	for _, m := range listed {
		if want := map[bool]string{true: queue.StateHeld, false: queue.StateDeferred}[m.ID == held]; m.State != want || m.Attempts != 1 {
			t.Errorf("inspect --json: %s in state %s after %d attempt(s), want %s after 1", m.ID, m.State, m.Attempts, want)
		}
	}
	out, _ = g.run(true, "smtp", "spool", "inspect", spool, "--id", held, "--body")
	mustContain(t, "inspect --id --body", out, "Subject: to w@other.test", "\nbody\n")
	mustContain(t, "inspect --id --body", strings.Join(strings.Fields(out), " "), "ID: "+held, "State: held, 1 attempt(s)", "w@other.test pending")
	_, errOut = g.run(false, "smtp", "spool", "inspect", spool, "--id", "NOSUCHMSG")
	mustContain(t, "inspect --id of an unknown message", errOut, "caddy smtp spool: no message NOSUCHMSG in spool")
	sameState(t, "spool after inspect", before, spoolState(t, spool))

	out, _ = g.run(true, "smtp", "spool", "convert", spool, converted, "--to", "files")
	mustContain(t, "convert", out, "converted 3 message(s) (4 pending recipient(s)) from segments "+spool+" to files "+converted)
	sameState(t, "spool after convert", before, spoolState(t, spool))
	_, errOut = g.run(false, "smtp", "spool", "convert", spool, converted, "--to", "files")
	mustContain(t, "convert into a spool that is not empty", errOut, "must be a new or empty directory")

	out, _ = g.run(true, "smtp", "spool", "inspect", converted)
	mustContain(t, "inspect of the converted spool", out, "(files format), delivery held for nowhere.test", "3 message(s)")
	var copied []queue.Snapshot
	out, _ = g.run(true, "smtp", "spool", "inspect", converted, "--json")
	if err := json.Unmarshal([]byte(out), &copied); err != nil {
		t.Fatal(err)
	}
	strip := func(ms []queue.Snapshot) string {
		for i := range ms {
			ms[i].AgeSeconds = 0
		}
		b, _ := json.Marshal(ms)
		return string(b)
	}
	if a, b := strip(listed), strip(copied); a != b {
		t.Errorf("converted spool differs:\n%s\nwant\n%s", b, a)
	}
	// And back into a segment spool.
	back := filepath.Join(g.dir, "back")
	g.run(true, "smtp", "spool", "convert", converted, back, "--to", "segments")
	out, _ = g.run(true, "smtp", "spool", "inspect", back, "--json")
	if err := json.Unmarshal([]byte(out), &copied); err != nil {
		t.Fatal(err)
	}
	if a, b := strip(listed), strip(copied); a != b {
		t.Errorf("spool converted back differs:\n%s\nwant\n%s", b, a)
	}

	g.start(g.config(converted, "files", g.maildir()))
	g.queueCmd(true, "flush")
	g.waitMaildirs("the converted messages in the maildirs")
	testutil.Eventually(t, 10*time.Second, "only the held message left", func() bool {
		left := g.queue()
		return len(left) == 1 && left[0].ID == held && left[0].State == queue.StateHeld
	})
}
