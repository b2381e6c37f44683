package files

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/zaptest"

	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/mx" // the default outbound target
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// TestModules opens both store modules through Caddy; each refuses a
// spool with messages in the other's format, but not an empty segment (a
// drained segment spool).
func TestModules(t *testing.T) {
	for _, tc := range []struct{ name, data, other, content string }{
		{"files", "msg", "segments/0000000000000001.seg", "SMTQ"},
		{"segments", "segments", "msg/A.json", "{}"},
	} {
		info, err := caddy.GetModule("smtp.queue.stores." + tc.name)
		if err != nil {
			t.Fatal(err)
		}
		opener, ok := info.New().(smtpapp.StoreOpener)
		if !ok {
			t.Fatalf("%T is not a smtpapp.StoreOpener", info.New())
		}
		env := smtpapp.StoreEnv{Dir: t.TempDir(), Logger: zaptest.NewLogger(t)}
		other := filepath.Join(env.Dir, tc.other)
		os.Mkdir(filepath.Dir(other), 0o700)
		os.WriteFile(other, nil, 0o600)
		s, err := opener.OpenStore(env)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		s.Close()
		if st, err := os.Stat(filepath.Join(env.Dir, tc.data)); err != nil || !st.IsDir() {
			t.Fatalf("%s: no %s/: %v", tc.name, tc.data, err)
		}
		os.WriteFile(other, []byte(tc.content), 0o600)
		_, err = opener.OpenStore(env)
		want := `queue store "` + tc.name + `": spool ` + env.Dir + " still holds messages in the other format (" + other + ")"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: other format opened: %v", tc.name, err)
		}
	}
}

// TestQueueStoreForms provisions smtp apps whose queue names this store
// in the short form (a JSON string) and in the object form.
func TestQueueStoreForms(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	for _, tc := range []struct{ store, wantErr string }{
		{`"files"`, ""},
		{`{"module": "files"}`, ""},
		{`{"module": "files", "sync": "never"}`, `unknown field "sync"`},
		{`"nosuch"`, "queue store: loading module 'nosuch': unknown module: smtp.queue.stores.nosuch"},
		{`{"path": "x"}`, "queue store: "},
	} {
		cfg := `{"admin": {"disabled": true}, "apps": {"smtp": {"servers": {"mx": {"listen": [{"address": "127.0.0.1:0"}]}}, "queue": {"path": "` + t.TempDir() + `", "store": ` + tc.store + `}}}}`
		err := caddy.Validate(mustConfig(t, cfg))
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("store %s: %v, want error %q", tc.store, err, tc.wantErr)
		}
	}
}

func mustConfig(t *testing.T, s string) *caddy.Config {
	t.Helper()
	cfg := new(caddy.Config)
	if err := json.Unmarshal([]byte(s), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}
