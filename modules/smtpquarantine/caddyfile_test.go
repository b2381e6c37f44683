package smtpquarantine

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycf "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestCaddyfileGolden: each testdata/*.caddyfile adapts, without warnings,
// to the JSON in the .json file next to it (go test -update rewrites
// them).
func TestCaddyfileGolden(t *testing.T) {
	inputs, _ := filepath.Glob(filepath.Join("testdata", "*.caddyfile"))
	if len(inputs) == 0 {
		t.Fatal("no testdata/*.caddyfile")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(in, ".caddyfile")
		t.Run(filepath.Base(name), func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(body, map[string]any{"filename": in})
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w.String())
			}
			var got bytes.Buffer
			if err := json.Indent(&got, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			got.WriteByte('\n')
			if *update {
				if err := os.WriteFile(name+".json", got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(name + ".json")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("adapted JSON differs from %s.json:\n%s", name, got.Bytes())
			}
		})
	}
}

// TestCaddyfileErrors: unknown options, wrong arity and duplicates are
// refused with the place.
func TestCaddyfileErrors(t *testing.T) {
	for in, want := range map[string]string{
		"smtp_quarantine x":                                      "wrong argument count",
		"smtp_quarantine {\n\tbogus 1\n}":                        "unrecognized smtp_quarantine option 'bogus'",
		"smtp_quarantine {\n\tuser\n}":                           "wrong argument count",
		"smtp_quarantine {\n\tpage_size x\n}":                    "page_size",
		"smtp_quarantine {\n\tuser a\n\tuser b\n}":               "duplicate option 'user'",
		"smtp_quarantine {\n\tusers {\n\t\tbob\n\t}\n}":          "needs at least one address",
		"smtp_quarantine {\n\tdigest {\n\t\tevery soon\n\t}\n}":  "every",
		"smtp_quarantine {\n\tdigest {\n\t\tcolour blue\n\t}\n}": "unrecognized smtp_quarantine digest option 'colour'",
		"smtp_quarantine {\n\tdigest {\n\t\tfrom a b\n\t}\n}":    "wrong argument count",
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddycf.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", in, err, want)
		}
	}
}
