// Package smtpquarantine is the `http.handlers.smtp_quarantine` module: a
// web page where users see the messages that the smtp app's checks
// quarantined for their addresses and release or delete them, and the
// digest mails that tell them about new ones with signed one-click links.
package smtpquarantine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the `http.handlers.smtp_quarantine` module: the quarantine of
// the running smtp app as server-rendered HTML pages. Mount it in a site
// behind Caddy's own authentication (basic_auth, forward_auth): the user
// that authentication names sees the quarantined messages for their
// addresses; admins see all. It answers every request it gets (it never
// calls the next handler):
//
//	GET  <base>/                     the list (?q= search, ?page=)
//	GET  <base>/m/<id>               one message: headers, body as text
//	POST <base>/m/<id>/release       deliver to the original recipients
//	POST <base>/m/<id>/allow-sender  allow list the sender, then release
//	POST <base>/m/<id>/delete        delete (no DSN)
//	GET  <base>/link?...             a digest's signed link: asks to confirm
//	POST <base>/link                 the confirmation: releases (or allows)
//	GET  <base>/style.css
//
// A link in a digest is its own credential (signed, expiring): leave the
// path `<base>/link` out of the site's authentication so that a click in
// the mail works without a login. Everything else refuses requests without
// an authenticated user (403).
type Handler struct {
	// User is the placeholder that gives the authenticated user's ID.
	// With forward_auth, name the header its copy_headers sets, such as
	// `{http.request.header.Remote-User}` (only a header that the
	// authentication sets: one a client could send itself would let it
	// claim any user). Default: `{http.auth.user.id}` (basic_auth).
	User string `json:"user,omitempty"`
	// Admins are the users who see and act on every quarantined message.
	// Default: none.
	Admins []string `json:"admins,omitempty"`
	// Users maps a user to the recipient addresses whose quarantined mail
	// the user sees: `alice@example.com` or a whole domain `@example.com`.
	// A user ID that is an address (contains `@`) sees that address
	// without an entry. Anyone else (not an admin, no address) gets 403.
	// Default: none.
	Users map[string][]string `json:"users,omitempty"`
	// PageSize is the number of messages on a page of the list. Default:
	// 50.
	PageSize int `json:"page_size,omitempty"`
	// Digest, when set, mails every recipient with newly quarantined mail
	// a list of it with signed links to release it (see Digest). Default:
	// no digests.
	Digest *Digest `json:"digest,omitempty"`

	ctx    caddy.Context
	logger *zap.Logger
	keys   keys
	admins map[string]bool
	scopes map[string]scope

	cancel context.CancelFunc // stops the digest loop,
	done   chan struct{}      // closed when it has
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.smtp_quarantine",
		New: func() caddy.Module { return new(Handler) },
	}
}

// defaultPageSize is the default of page_size.
const defaultPageSize = 50

// Provision loads (or makes) the signing key in storage and starts the
// digest loop.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.ctx, h.logger = ctx, ctx.Logger()
	if h.User == "" {
		h.User = "{http.auth.user.id}"
	}
	if h.PageSize == 0 {
		h.PageSize = defaultPageSize
	}
	h.admins = make(map[string]bool, len(h.Admins))
	for _, a := range h.Admins {
		h.admins[a] = true
	}
	h.scopes = make(map[string]scope, len(h.Users))
	for user, addrs := range h.Users {
		s, err := newScope(addrs)
		if err != nil {
			return fmt.Errorf("smtp_quarantine: users: %q: %w", user, err)
		}
		h.scopes[user] = s
	}
	if h.Digest != nil {
		if err := h.Digest.provision(); err != nil {
			return fmt.Errorf("smtp_quarantine: digest: %w", err)
		}
	}
	kctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	k, err := loadKeys(kctx, ctx.Storage())
	if err != nil {
		return fmt.Errorf("smtp_quarantine: signing key: %w", err)
	}
	h.keys = k
	if h.Digest != nil {
		h.startDigests()
	}
	return nil
}

// Validate checks the settings.
func (h *Handler) Validate() error {
	if h.PageSize < 1 || h.PageSize > 500 {
		return fmt.Errorf("smtp_quarantine: page_size %d: want 1 to 500", h.PageSize)
	}
	for _, a := range h.Admins {
		if strings.TrimSpace(a) == "" {
			return errors.New("smtp_quarantine: admins: an empty user name")
		}
	}
	return nil
}

// Cleanup stops the digest loop.
func (h *Handler) Cleanup() error {
	h.stopDigests()
	return nil
}

// ServeHTTP serves the pages.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	setSecurityHeaders(w.Header())
	p := parsePath(r.URL.Path)
	switch p.kind {
	case pageCSS:
		return serveCSS(w, r)
	case pageLink:
		return h.serveLink(w, r, p)
	case pageNone:
		return h.fail(w, p, http.StatusNotFound, "There is no such page.")
	}
	v, err := h.viewer(r)
	if err != nil {
		h.logger.Info("quarantine page refused", zap.String("remote_ip", remoteIP(r)), zap.Error(err))
		return h.fail(w, p, http.StatusForbidden, err.Error())
	}
	switch p.kind {
	case pageList:
		return h.serveList(w, r, p, v)
	case pageMessage:
		return h.serveMessage(w, r, p, v)
	default: // pageAction
		return h.serveAction(w, r, p, v)
	}
}

// setSecurityHeaders keeps the pages to themselves: nothing but our style
// sheet loads, forms post only to us, nothing frames them, and no URL (a
// signed link) leaks in a Referer.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// Page kinds of parsePath.
const (
	pageNone = iota
	pageList
	pageMessage
	pageAction
	pageLink
	pageCSS
)

// page is where a request goes: its kind, the message ID and action, and
// rel, the relative path from the request's URL back to the handler's base
// (the pages link relatively, so the handler works under any path prefix,
// stripped or not).
type page struct {
	kind   int
	id     string
	action string
	rel    string
}

// parsePath finds the page from the end of the path.
func parsePath(path string) page {
	segs := strings.Split(path, "/")
	n := len(segs)
	last := segs[n-1]
	switch {
	case last == "":
		return page{kind: pageList}
	case last == "style.css":
		return page{kind: pageCSS}
	case last == "link":
		return page{kind: pageLink}
	case n >= 3 && segs[n-2] == "m" && queue.ValidID(last):
		return page{kind: pageMessage, id: last, rel: "../"}
	case n >= 4 && segs[n-3] == "m" && queue.ValidID(segs[n-2]) &&
		(last == "release" || last == "delete" || last == "allow-sender"):
		return page{kind: pageAction, id: segs[n-2], action: last, rel: "../../"}
	}
	return page{kind: pageNone}
}

// remoteIP is the client's address for the logs.
func remoteIP(r *http.Request) string {
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if ip, ok := vars[caddyhttp.ClientIPVarKey].(string); ok {
		return ip
	}
	return r.RemoteAddr
}

// Interface guards
var (
	_ caddy.Module                = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
