package cmdsmtp

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage"
	"github.com/spf13/cobra"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/lists"
)

// runLists runs `caddy smtp lists <args> --address admin` and returns what
// it printed.
func runLists(t *testing.T, admin string, args ...string) (string, error) {
	t.Helper()
	return runSub(t, listsCommand(), admin, args...)
}

// runSub runs a subcommand with --address admin and returns what it
// printed on stdout.
func runSub(t *testing.T, cmd *cobra.Command, admin string, args ...string) (string, error) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = f
	cmd.SetArgs(append(args, "--address", admin))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.Execute()
	os.Stdout = stdout
	f.Close()
	out, rerr := os.ReadFile(f.Name())
	if rerr != nil {
		t.Fatal(rerr)
	}
	return string(out), err
}

// TestListsCommand: `caddy smtp lists add|remove|show` against the admin
// API of a running Caddy (in this process, with only an admin endpoint and
// a storage): entries go into storage normalised, the table and --json show
// them, invalid entries and arguments fail with the API's message.
func TestListsCommand(t *testing.T) {
	storage := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	cfg, err := json.Marshal(map[string]any{
		"admin":   map[string]any{"listen": admin, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": storage},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	ok := func(want string, args ...string) string {
		t.Helper()
		out, err := runLists(t, admin, args...)
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("lists %s: %q, %v; want output containing %q", strings.Join(args, " "), out, err, want)
		}
		return out
	}
	fails := func(want string, args ...string) {
		t.Helper()
		out, err := runLists(t, admin, args...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("lists %s: %q, error %v; want an error containing %q", strings.Join(args, " "), out, err, want)
		}
	}
	ok("The lists are empty.", "show")
	ok("ip 192.0.2.0/24 is in the block list", "add", "block", "ip", "192.0.2.0/24", "--comment", "spam run")
	ok("sender friend@example.test is in the allow list", "add", "allow", "sender", "Friend@Example.test")
	ok("sender_domain .spam.test is in the block list", "add", "block", "sender_domain", ".Spam.test.")
	out := ok("3 entry(ies)", "show")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "LIST") || !strings.HasPrefix(lines[1], "allow") ||
		!strings.Contains(lines[2], "192.0.2.0/24") || !strings.HasSuffix(lines[2], "spam run") {
		t.Errorf("show: the table is not allow then block, one entry a line:\n%s", out)
	}
	ok("1 entry(ies)", "show", "allow")

	out = ok(`"value":"192.0.2.0/24"`, "show", "block", "--json")
	var block []lists.Entry
	if err := json.Unmarshal([]byte(out), &block); err != nil || len(block) != 2 || block[0].Comment != "spam run" {
		t.Errorf("show block --json: %v: %s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(storage, filepath.FromSlash(lists.StorageKey("block"))))
	if err != nil || !strings.Contains(string(raw), `".spam.test"`) {
		t.Errorf("the block list in storage: %v: %s", err, raw)
	}

	fails("host bits set (the network is 192.0.2.0/24)", "add", "block", "ip", "192.0.2.1/24")
	fails("want one of ip, helo, sender, sender_domain, recipient", "add", "block", "client", "192.0.2.1")
	fails(`list "grey": want allow or block`, "add", "grey", "ip", "192.0.2.1")
	fails("want the arguments <allow|block> <kind> <value>", "add", "block", "ip")
	fails("want the arguments [allow|block]", "show", "allow", "block")

	ok("ip 192.0.2.0/24 removed from the block list", "remove", "block", "ip", "192.0.2.0/24")
	fails("ip 192.0.2.0/24 is not in the block list", "remove", "block", "ip", "192.0.2.0/24")
	ok("sender_domain .spam.test removed from the block list", "remove", "block", "sender_domain", ".spam.test")
	ok("The list is empty.", "show", "block")
}
