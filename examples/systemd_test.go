package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// TestSystemdUnitVerifies runs systemd-analyze verify on
// examples/systemd/caddy-smtp.service. verify insists that ExecStart's
// program exists, so the copy it checks points at a stand-in executable
// instead of /usr/bin/caddy; every other line is checked as shipped.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := testutil.RequireTool(t, "systemd-analyze")
	unit, err := os.ReadFile(filepath.Join("systemd", "caddy-smtp.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stand := filepath.Join(dir, "caddy")
	if err := os.WriteFile(stand, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for _, cmd := range []string{"ExecStart=/usr/bin/caddy ", "ExecReload=/usr/bin/caddy "} {
		if !strings.Contains(text, cmd) {
			t.Fatalf("the unit has no %q", cmd)
		}
	}
	text = strings.ReplaceAll(text, "=/usr/bin/caddy ", "="+stand+" ")
	path := filepath.Join(dir, "caddy-smtp.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
