package smtpquarantine

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// scope is the set of recipient addresses a user may see: whole
// addresses and whole domains, lowercased.
type scope struct {
	addrs   []string
	domains []string
}

// newScope reads the addresses of a users entry: `a@example.com` or
// `@example.com`.
func newScope(entries []string) (scope, error) {
	var s scope
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		switch d, isDomain := strings.CutPrefix(e, "@"); {
		case isDomain && d != "" && !strings.Contains(d, "@"):
			s.domains = append(s.domains, strings.TrimSuffix(d, "."))
		case !isDomain && strings.Contains(e, "@") && queue.LocalPart(e) != "" && queue.Domain(e) != "":
			s.addrs = append(s.addrs, e)
		default:
			return s, fmt.Errorf("%q is neither an address nor @domain", e)
		}
	}
	return s, nil
}

// has reports whether a recipient address is in the scope.
func (s scope) has(addr string) bool {
	addr = strings.ToLower(addr)
	return slices.Contains(s.addrs, addr) || slices.Contains(s.domains, queue.Domain(addr))
}

// viewer is the authenticated user of a request and what it may see.
type viewer struct {
	user  string
	admin bool
	scope scope
}

// viewer finds the request's user: 403 (an error to show) without one, or
// for a user who may see nothing.
func (h *Handler) viewer(r *http.Request) (*viewer, error) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return nil, errors.New("no authenticated user")
	}
	user := strings.TrimSpace(repl.ReplaceAll(h.User, ""))
	if user == "" {
		return nil, errors.New("no authenticated user: this site must sign users in (basic_auth or forward_auth) before smtp_quarantine")
	}
	v := &viewer{user: user, admin: h.admins[user], scope: h.scopes[user]}
	if strings.Contains(user, "@") {
		v.scope.addrs = append(slices.Clip(v.scope.addrs), strings.ToLower(user))
	}
	if !v.admin && len(v.scope.addrs) == 0 && len(v.scope.domains) == 0 {
		return nil, fmt.Errorf("user %q may see no quarantined mail", user)
	}
	return v, nil
}

// sees reports whether the viewer may see (and act on) a message: an
// admin sees all, a user the messages with a recipient in their scope.
func (v *viewer) sees(s queue.Snapshot) bool {
	if v.admin {
		return true
	}
	return slices.ContainsFunc(s.Recipients, func(r queue.RecipientSnapshot) bool { return v.scope.has(r.Addr) })
}

// ownsAll reports whether every recipient of a message is the viewer's
// (always for an admin): only then may the viewer delete it, which would
// take it from the other recipients too.
func (v *viewer) ownsAll(s queue.Snapshot) bool {
	return v.admin || !slices.ContainsFunc(s.Recipients, func(r queue.RecipientSnapshot) bool { return !v.scope.has(r.Addr) })
}

// recipients are the message's recipients the viewer may see.
func (v *viewer) recipients(all []string) []string {
	if v.admin {
		return all
	}
	var out []string
	for _, a := range all {
		if v.scope.has(a) {
			out = append(out, a)
		}
	}
	return out
}
