package files

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

// FuzzLoad opens a spool holding one message whose envelope file has
// arbitrary content. The envelope either loads as that message or is moved,
// unchanged, to corrupt/ with an error; a second load then finds the same
// messages and no error; and a new message (built from the other inputs)
// is stored and reloaded unchanged.
func FuzzLoad(f *testing.F) {
	env, err := json.Marshal(queuetest.FuzzMessage([]byte("\x05a@b.test\x00\x00\x00\x00h\x00mx\x00c@d.test")))
	if err != nil {
		f.Fatal(err)
	}
	good := bytes.Replace(env, []byte(`"id":""`), []byte(`"id":"F1"`), 1)
	msg := []byte("\x02s@sender.test\x007BIT\x00FULL\x00e1\x00helo\x00mx\x00r@example.test\x01\x01NEVER")
	f.Add(good, msg, []byte("body\r\n"))
	f.Add(env, msg, []byte{})
	f.Add([]byte(`{"id":"F1","rcpts":[{"addr":"x"}],"arrived":"2026-13-01T00:00:00Z"}`), []byte{}, []byte("b"))
	f.Add([]byte("{not json"), msg, []byte("b"))
	f.Fuzz(func(t *testing.T, env, msg, body []byte) {
		dir := t.TempDir()
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"F1.json": env, "F1.eml": []byte("stored body")} {
			if err := os.WriteFile(filepath.Join(dir, "msg", name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		first, lerr := s.Load()
		switch {
		case lerr == nil && (len(first) != 1 || first[0].ID != "F1"):
			t.Fatalf("loaded %+v from %q", first, env)
		case lerr != nil:
			if len(first) != 0 {
				t.Fatalf("loaded %+v and %v", first, lerr)
			}
			kept, err := os.ReadFile(filepath.Join(dir, "corrupt", "F1.json"))
			if err != nil || !bytes.Equal(kept, env) {
				t.Fatalf("unreadable envelope (%v) kept as %q, %v", lerr, kept, err)
			}
		}
		again, err := s.Load()
		if err != nil || !reflect.DeepEqual(again, first) {
			t.Fatalf("second load: %+v, %v; first %+v", again, err, first)
		}
		queuetest.CommitReload(t, openStore, dir, s, "FUZZ-NEW", queuetest.FuzzMessage(msg), body).Close()
	})
}
