package smtpquarantine

import (
	"context"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// TestScoping: a user whose ID is an address sees that address, a users
// entry adds addresses and domains, an admin sees all, and a user with no
// address (or no user at all) is refused.
func TestScoping(t *testing.T) {
	h := &Handler{User: "{http.auth.user.id}", admins: map[string]bool{"alice": true}, scopes: map[string]scope{}}
	for user, addrs := range map[string][]string{"carol": {"@Example.ORG", "carol@partner.test"}, "Bob@Example.test": {"bob2@example.test"}} {
		s, err := newScope(addrs)
		if err != nil {
			t.Fatal(err)
		}
		h.scopes[user] = s
	}
	msg := func(rcpts ...string) queue.Snapshot {
		var s queue.Snapshot
		for _, r := range rcpts {
			s.Recipients = append(s.Recipients, queue.RecipientSnapshot{Addr: r})
		}
		return s
	}
	for _, c := range []struct {
		user string
		rcpt string
		sees bool
	}{
		{"alice", "anyone@anywhere.test", true},
		{"Bob@Example.test", "bob@example.test", true},
		{"Bob@Example.test", "BOB2@example.test", true},
		{"Bob@Example.test", "bob3@example.test", false},
		{"carol", "x@example.org", true},
		{"carol", "x@sub.example.org", false},
		{"carol", "carol@partner.test", true},
		{"carol", "bob@example.test", false},
	} {
		v, err := h.viewer(request(c.user))
		if err != nil {
			t.Fatalf("%s: %v", c.user, err)
		}
		if got := v.sees(msg("other@elsewhere.test", c.rcpt)); got != c.sees {
			t.Errorf("%s sees a message to %s: %v, want %v", c.user, c.rcpt, got, c.sees)
		}
	}
	for _, user := range []string{"", "dave"} {
		if _, err := h.viewer(request(user)); err == nil {
			t.Errorf("user %q was let in", user)
		}
	}
	if _, err := newScope([]string{"not-an-address"}); err == nil {
		t.Error("newScope took a word that is neither an address nor @domain")
	}
}

// request is a request whose replacer names the authenticated user.
func request(user string) *http.Request {
	repl := caddy.NewReplacer()
	if user != "" {
		repl.Set("http.auth.user.id", user)
	}
	r, _ := http.NewRequestWithContext(context.WithValue(context.Background(), caddy.ReplacerCtxKey, repl), http.MethodGet, "/", nil)
	return r
}
