package caddyfile

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestExamplesAdapt adapts every Caddyfile under examples/ without errors or
// warnings (including "not formatted"), so the examples stay runnable.
func TestExamplesAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "examples", "*", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no example Caddyfiles found")
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f)), func(t *testing.T) {
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := adapt(t, f, body)
			if err != nil {
				t.Fatalf("adapting %s: %v", f, err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w.String())
			}
			var cfg struct {
				Apps map[string]json.RawMessage `json:"apps"`
			}
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			if _, ok := cfg.Apps["smtp"]; !ok {
				t.Fatalf("%s has no smtp app", f)
			}
		})
	}
}
