package caddyfile

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// FuzzAdapt runs the Caddyfile adapter on arbitrary text inside the smtp
// global option. It must return an error or JSON that is a Caddy config
// whose smtp app decodes into smtpapp.App with no unknown field and encodes
// back to the same JSON; the same input adapts the same way twice.
func FuzzAdapt(f *testing.F) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.caddyfile"))
	if err != nil || len(inputs) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, in := range inputs {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(smtpBlock(string(b)))
	}
	f.Add("server a {\n listen :25\n}\nserver a {\n}\n")
	f.Add("route {\n}\nqueue {\n max_age -1s\n}\n")
	f.Add("server mx {\n listen {$NOPE} starttls\n max_message_size 1EiB\n}\n")
	adapter := caddyconfig.GetAdapter("caddyfile")
	f.Fuzz(func(t *testing.T, inner string) {
		body := []byte("{\n\tsmtp {\n" + inner + "\n\t}\n}\n")
		out, _, err := adapter.Adapt(body, map[string]any{"filename": "Caddyfile"})
		out2, _, err2 := adapter.Adapt(body, map[string]any{"filename": "Caddyfile"})
		if (err == nil) != (err2 == nil) || !bytes.Equal(out, out2) {
			t.Fatalf("adapting twice: %s, %v; then %s, %v", out, err, out2, err2)
		}
		if err != nil {
			return
		}
		var cfg caddy.Config
		if err := json.Unmarshal(out, &cfg); err != nil {
			t.Fatalf("output %s is not a Caddy config: %v", out, err)
		}
		raw, ok := cfg.AppsRaw["smtp"]
		if !ok {
			return // e.g. the input closed the smtp block early
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var app smtpapp.App
		if err := dec.Decode(&app); err != nil {
			t.Fatalf("smtp app %s does not decode: %v", raw, err)
		}
		again, err := json.Marshal(&app)
		if err != nil {
			t.Fatalf("decoded smtp app does not encode: %v", err)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, raw); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, want.Bytes()) {
			t.Fatalf("smtp app %s encodes back as %s", want.Bytes(), again)
		}
	})
}

// smtpBlock returns what is inside the first `smtp { ... }` of a Caddyfile.
func smtpBlock(caddyfile string) string {
	start := strings.Index(caddyfile, "smtp {")
	if start < 0 {
		return ""
	}
	rest := caddyfile[start+len("smtp {"):]
	depth := 1
	for i, c := range rest {
		switch c {
		case '{':
			depth++
		case '}':
			if depth--; depth == 0 {
				return rest[:i]
			}
		}
	}
	return rest
}
