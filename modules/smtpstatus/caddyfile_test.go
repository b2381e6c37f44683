package smtpstatus_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// TestCaddyfileAdapt adapts a status site (basic_auth, smtp_status and a
// respond for other paths) and compares the JSON with the golden file:
// basic_auth runs first, smtp_status before respond. UPDATE_GOLDEN=1
// rewrites the golden file.
func TestCaddyfileAdapt(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "status.caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(in, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "\t"); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	golden := filepath.Join("testdata", "status.json")
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pretty.Bytes(), want) {
		t.Errorf("adapted:\n%s\nwant:\n%s", pretty.Bytes(), want)
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, directive, want string }{
		{"argument", "smtp_status on", "wrong argument count or unexpected line ending after 'on', at Caddyfile:2"},
		{"option", "smtp_status {\n\t\ttitle x\n\t}", "unrecognized smtp_status option 'title', at Caddyfile:3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := "status.example.internal {\n\t" + tc.directive + "\n}\n"
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
