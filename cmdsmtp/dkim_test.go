package cmdsmtp

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/dkimsign"
)

// runDKIM runs `caddy smtp dkim <args> --address admin` and returns what
// it printed.
func runDKIM(t *testing.T, admin string, args ...string) (string, error) {
	t.Helper()
	return runSub(t, dkimCommand(), admin, args...)
}

// TestDKIMCommand: `caddy smtp dkim records|rotate` against the admin API
// of a running Caddy whose storage holds a domain's keys: the TXT records
// (and the CNAME form), a rotation that adds the next keys, errors with
// the API's message.
func TestDKIMCommand(t *testing.T) {
	storage := t.TempDir()
	if _, _, err := dkimsign.EnsureKeys(context.Background(), &certmagic.FileStorage{Path: storage}, "example.org",
		[]string{dkimsign.AlgRSA, dkimsign.AlgEd25519}, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg, _ := json.Marshal(map[string]any{
		"admin":   map[string]any{"listen": admin, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": storage},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
	})
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	out, err := runDKIM(t, admin, "records")
	if err != nil || strings.Count(out, "; current") != 2 ||
		!strings.Contains(out, `s20261203r._domainkey.example.org. TXT "v=DKIM1; k=rsa; p=`) ||
		!strings.Contains(out, `s20261203e._domainkey.example.org. TXT "v=DKIM1; k=ed25519; p=`) {
		t.Errorf("records: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		for i, q := range strings.Split(line, `"`) {
			if i%2 == 1 && len(q) > 255 {
				t.Errorf("a TXT string longer than 255 bytes: %s", line)
			}
		}
	}
	out, err = runDKIM(t, admin, "records", "--cname-zone", "dkim.provider.example")
	if err != nil || !strings.Contains(out, "s20261203r._domainkey.example.org. CNAME s20261203r.example.org._domainkey.dkim.provider.example.") ||
		!strings.Contains(out, "s20261203r.example.org._domainkey.dkim.provider.example. TXT \"v=DKIM1; k=rsa;") {
		t.Errorf("records --cname-zone: %v\n%s", err, out)
	}
	out, err = runDKIM(t, admin, "rotate", "example.org")
	if err != nil || !strings.Contains(out, "rotation of example.org started") {
		t.Errorf("rotate: %v\n%s", err, out)
	}
	if out, err = runDKIM(t, admin, "records", "example.org"); err != nil || strings.Count(out, "; next") != 2 {
		t.Errorf("records after the rotation: %v\n%s", err, out)
	}
	if _, err := runDKIM(t, admin, "rotate", "nokeys.example"); err == nil || !strings.Contains(err.Error(), "no DKIM keys for nokeys.example") {
		t.Errorf("rotate without keys: %v", err)
	}
}
