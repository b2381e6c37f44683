package pgstorage_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func adapt(t *testing.T, body string) (map[string]any, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte("{\n"+body+"\n}\n"), nil)
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg, nil
}

// The global storage option takes the module with its block; {env.*}
// stays a placeholder in the JSON (replaced when provisioned).
func TestCaddyfile(t *testing.T) {
	cfg, err := adapt(t, "storage postgres {\n dsn {env.PG_DSN}\n lock_expiry 30s\n}")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(cfg["storage"])
	if want := `{"dsn":"{env.PG_DSN}","lock_expiry":30000000000,"module":"postgres"}`; string(got) != want {
		t.Fatalf("storage = %s, want %s", got, want)
	}
	for body, want := range map[string]string{
		"storage postgres {\n dsn a\n dsn b\n}":    "duplicate option 'dsn'",
		"storage postgres {\n pool 4\n}":           "unrecognized storage postgres option 'pool'",
		"storage postgres {\n dsn\n}":              "wrong argument count",
		"storage postgres {\n lock_expiry soon\n}": "lock_expiry 'soon'",
		"storage postgres extra {\n dsn a\n}":      "wrong argument count",
		"storage postgres {\n dsn a b\n}":          "wrong argument count",
	} {
		if _, err := adapt(t, body); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", body, err, want)
		}
	}
}
