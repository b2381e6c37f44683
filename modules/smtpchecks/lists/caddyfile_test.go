package lists

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	var c Check
	if err := c.UnmarshalCaddyfile(caddyfile.NewTestDispenser("lists {\n reload_interval 1m\n order sender ip\n}")); err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.ReloadInterval) != time.Minute || !slices.Equal(c.Order, []string{"sender", "ip"}) {
		t.Errorf("got %+v", c)
	}
	for input, want := range map[string]string{
		"lists 10s":                                            "wrong argument count",
		"lists {\n reload_interval\n}":                         "wrong argument count",
		"lists {\n reload_interval 0s\n}":                      "want a positive duration, got '0s'",
		"lists {\n reload_interval 1s\n reload_interval 2s\n}": "reload_interval given twice",
		"lists {\n order ip client\n}":                         "unknown kind 'client'",
		"lists {\n order\n}":                                   "wrong argument count",
		"lists {\n allow 192.0.2.1\n}":                         "unrecognized lists option 'allow'",
	} {
		var c Check
		err := c.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Testfile:") {
			t.Errorf("%q: error %v, want one containing %q and the position", input, err, want)
		}
	}
}
