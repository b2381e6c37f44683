package smtpapp_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// writeConfig writes a config for a gateway process and returns its path.
func (e *testEnv) writeConfig(cfg map[string]any) string {
	e.t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.dir, "gateway.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// gatewayProcess is the gateway running as a separate process (this test
// binary in child mode), so that it can be killed with SIGKILL.
type gatewayProcess struct {
	t   *testing.T
	cmd *exec.Cmd
}

func startGatewayProcess(t *testing.T, cfgPath, logPath, addr string) *gatewayProcess {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childConfigEnv+"="+cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProcess{t: t, cmd: cmd}
	t.Cleanup(func() {
		g.kill()
		logf.Close()
	})
	waitForPort(t, addr)
	return g
}

// kill ends the process with SIGKILL: no clean stop, no flush.
func (g *gatewayProcess) kill() {
	if g.cmd.ProcessState != nil {
		return
	}
	_ = g.cmd.Process.Kill()
	_ = g.cmd.Wait()
}

func TestCrashSafetySIGKILL(t *testing.T) {
	e := newTestEnv(t)
	r := startReceiver(t, receiverOpts{})
	// A slow receiver keeps deliveries in flight when the kill comes.
	r.dataErr = func() error {
		tm := time.NewTimer(2 * time.Millisecond)
		<-tm.C
		return nil
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg := e.config(map[string]any{
		"queue": map[string]any{"path": e.spool, "retry_initial": "100ms", "retry_max": "200ms", "per_destination": 4},
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": addr, "tls": "off"}},
		}},
		"routes": []any{map[string]any{"domains": []string{"example.test"},
			"deliver": map[string]any{"target": "relay", "hosts": []string{r.addr}}}},
	})
	cfgPath := e.writeConfig(cfg)
	logPath := filepath.Join(e.dir, "gateway.log")
	g := startGatewayProcess(t, cfgPath, logPath, addr)

	// Senders stream messages until the gateway dies; every 250 is noted.
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	for s := 0; s < 6; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			reply := func() string {
				var last string
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return ""
					}
					last = line
					if len(line) < 4 || line[3] != '-' {
						return last
					}
				}
			}
			if !strings.HasPrefix(reply(), "220") {
				return
			}
			fmt.Fprintf(c, "EHLO sender%d.example\r\n", s)
			reply()
			for i := 0; ; i++ {
				id := fmt.Sprintf("crash-%d-%d", s, i)
				fmt.Fprintf(c, "MAIL FROM:<a@sender.test>\r\nRCPT TO:<u%d@example.test>\r\nDATA\r\n", s)
				if !strings.HasPrefix(reply(), "250") || !strings.HasPrefix(reply(), "250") || !strings.HasPrefix(reply(), "354") {
					return
				}
				fmt.Fprintf(c, "Message-ID: <%s@test>\r\nSubject: %s\r\n\r\nbody\r\n.\r\n", id, id)
				if !strings.HasPrefix(reply(), "250") {
					return
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		}()
	}
	// Kill at a random point once messages are flowing in and out.
	eventually(t, "some deliveries", func() bool { return len(r.messages()) >= 20 })
	tm := time.NewTimer(time.Duration(rand.IntN(300)) * time.Millisecond)
	<-tm.C
	g.kill()
	wg.Wait()
	mu.Lock()
	nAcked := len(acked)
	mu.Unlock()
	atKill := len(r.messages())
	t.Logf("killed with %d messages acknowledged, %d delivered", nAcked, atKill)

	// Restart on the same spool: every acknowledged message arrives.
	startGatewayProcess(t, cfgPath, logPath, addr)
	seen := func() map[string]int {
		counts := map[string]int{}
		for _, m := range r.messages() {
			counts[strings.TrimSuffix(strings.TrimPrefix(m.header("Message-ID"), "<"), "@test>")]++
		}
		return counts
	}
	eventually(t, "every acknowledged message delivered after the restart", func() bool {
		counts := seen()
		for id := range acked {
			if counts[id] == 0 {
				return false
			}
		}
		return true
	})
	dups := 0
	for id, n := range seen() {
		if n > 1 {
			dups += n - 1
			t.Logf("duplicate: %s delivered %d times", id, n)
		}
	}
	t.Logf("after restart: %d acknowledged, %d duplicates", nAcked, dups)
	// Only deliveries in flight at the kill can repeat: at most one per
	// open session (per_destination 4).
	if dups > 4 {
		t.Fatalf("%d duplicates; at most 4 deliveries can have been in flight", dups)
	}
}

// TestGracefulExitOnSIGTERM: when Caddy exits, an idle client is told to
// leave (421 4.3.2) at its next MAIL, a message in transfer still gets
// its 250, and the process exits once the sessions are done.
func TestGracefulExitOnSIGTERM(t *testing.T) {
	e := newTestEnv(t)
	r := startReceiver(t, receiverOpts{})
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg := e.config(map[string]any{
		"grace_period": "20s",
		"servers": map[string]any{"mx": map[string]any{
			"listen": []any{map[string]any{"address": addr, "tls": "off"}},
		}},
		"routes": []any{map[string]any{"domains": []string{"example.test"},
			"deliver": map[string]any{"target": "relay", "hosts": []string{r.addr}}}},
	})
	cfgPath := e.writeConfig(cfg)
	g := startGatewayProcess(t, cfgPath, filepath.Join(e.dir, "gateway.log"), addr)

	idle := dial(t, addr)
	idle.expect("220")
	idle.cmd("EHLO idle.example", "250")
	busy := dial(t, addr)
	busy.expect("220")
	busy.cmd("EHLO busy.example", "250")
	busy.cmd("MAIL FROM:<a@sender.test>", "250")
	busy.cmd("RCPT TO:<u@example.test>", "250")
	busy.cmd("DATA", "354")

	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- g.cmd.Wait() }()

	// The idle client is sent away at its next transaction.
	eventually(t, "421 for the idle client", func() bool {
		rep := idle.cmd("MAIL FROM:<a@sender.test>", "")
		if strings.HasPrefix(rep, "421 4.3.2") {
			return true
		}
		idle.cmd("RSET", "250")
		return false
	})
	idle.cmd("QUIT", "221")
	// The message in transfer is accepted, then the process goes.
	busy.raw("Subject: during exit\r\n\r\nbody\r\n.\r\n")
	busy.expect("250 2.0.0")
	busy.cmd("QUIT", "221")
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatal("gateway did not exit after its sessions ended")
	}
	// What it accepted was queued durably: a restart delivers it.
	startGatewayProcess(t, cfgPath, filepath.Join(e.dir, "gateway.log"), addr)
	if m := r.waitMessages(1)[0]; m.header("Subject") != "during exit" {
		t.Fatalf("relayed %q", m.header("Subject"))
	}
}
