package smtpapp_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecondProcessOnSameAddressRefused: a second gateway process with its
// own spool and a config for an address this one serves does not start
// (with the kernel splitting connections between two spools); it fails
// with an error that names the address. This process keeps serving.
func TestSecondProcessOnSameAddressRefused(t *testing.T) {
	e := newTestEnv(t)
	addr := e.start(map[string]any{})[0]

	other := newTestEnv(t)
	cfg := other.config(map[string]any{"servers": map[string]any{"mx": map[string]any{
		"listen": []any{map[string]any{"address": addr}},
	}}})
	cfg["logging"] = map[string]any{"logs": map[string]any{"default": map[string]any{"level": "INFO"}}}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(other.dir, "caddy.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childConfigEnv+"="+cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	// The child either exits with its error or logs that it listens.
	var out []string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		out = append(out, line)
		if strings.Contains(line, `"msg":"listening"`) {
			t.Fatalf("a second process listens on %s:\n%s", addr, strings.Join(out, "\n"))
		}
	}
	err = cmd.Wait()
	if err == nil {
		t.Fatalf("the second process exited cleanly:\n%s", strings.Join(out, "\n"))
	}
	all := strings.Join(out, "\n")
	if !strings.Contains(all, addr+" is already in use, by another process") {
		t.Fatalf("the second process failed without saying the address is in use:\n%s", all)
	}
	// This gateway still serves.
	d := dial(t, addr)
	d.expect("220")
	d.cmd("EHLO client.example", "250")
}
