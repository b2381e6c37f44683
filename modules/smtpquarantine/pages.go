package smtpquarantine

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/quarantineview"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

//go:embed templates/*.html templates/style.css
var files embed.FS

// templates are the pages, each parsed with the layout.
var templates = func() map[string]*template.Template {
	funcs := template.FuncMap{"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	}, "join": strings.Join}
	out := make(map[string]*template.Template)
	for _, name := range []string{"list", "message", "link", "error"} {
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}()

// layout is what every page has.
type layout struct {
	Title string
	// Rel leads from the page back to the handler's base ("", "../").
	Rel  string
	User string
	// Admin marks a page seen by an admin.
	Admin bool
}

// render writes a page with its status.
func (h *Handler) render(w http.ResponseWriter, status int, name string, data any) error {
	var b bytes.Buffer
	if err := templates[name].Execute(&b, data); err != nil {
		h.logger.Error("rendering quarantine page", zap.String("page", name), zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return nil
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write(b.Bytes())
	return err
}

type errorPage struct {
	layout
	Status  int
	Message string
}

// fail shows an error page.
func (h *Handler) fail(w http.ResponseWriter, p page, status int, msg string) error {
	return h.render(w, status, "error", errorPage{layout: layout{Title: http.StatusText(status), Rel: p.rel}, Status: status, Message: msg})
}

// failQueue shows the error of a queue lookup or action.
func (h *Handler) failQueue(w http.ResponseWriter, p page, err error) error {
	switch {
	case errors.Is(err, queue.ErrNotFound), errors.Is(err, quarantineview.ErrNotQuarantined):
		return h.fail(w, p, http.StatusNotFound, "This message is not in the quarantine (any more): it was released, deleted or has expired.")
	case errors.Is(err, quarantineview.ErrNoApp), errors.Is(err, quarantineview.ErrNoQueue),
		errors.Is(err, queue.ErrBusy), errors.Is(err, queue.ErrClosed):
		return h.fail(w, p, http.StatusServiceUnavailable, "The mail queue is not running; try again later.")
	case errors.Is(err, quarantineview.ErrCannotAllow):
		return h.fail(w, p, http.StatusConflict, err.Error())
	}
	h.logger.Error("quarantine page", zap.Error(err))
	return h.fail(w, p, http.StatusInternalServerError, "The action failed; the server's log says why.")
}

func serveCSS(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return nil
	}
	css, err := files.ReadFile("templates/style.css")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=3600")
	_, err = w.Write(css)
	return err
}

// allow answers 405 unless the request uses the method.
func (h *Handler) allow(w http.ResponseWriter, r *http.Request, p page, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	_ = h.fail(w, p, http.StatusMethodNotAllowed, "This page does not take "+r.Method+" requests.")
	return false
}

type listPage struct {
	layout
	Q        string
	Total    int
	Page     int
	Pages    int
	Prev     string
	Next     string
	Notice   string
	Messages []listRow
}

type listRow struct {
	quarantineview.Message
	To string
}

// Notices of the list after an action (?done=).
var notices = map[string]string{
	"release":      "Message %s released: it is on its way to its recipients.",
	"allow-sender": "Sender allowed and message %s released.",
	"delete":       "Message %s deleted.",
}

func (h *Handler) serveList(w http.ResponseWriter, r *http.Request, p page, v *viewer) error {
	if !h.allow(w, r, p, http.MethodGet, http.MethodHead) {
		return nil
	}
	q, err := quarantineview.ActiveQueue()
	if err != nil {
		return h.failQueue(w, p, err)
	}
	query := r.URL.Query()
	n, err := strconv.Atoi(query.Get("page"))
	if err != nil || n < 1 {
		n = 1
	}
	n = min(n, math.MaxInt/h.PageSize)
	search := query.Get("q")
	total, msgs := quarantineview.List(q, search, (n-1)*h.PageSize, h.PageSize, v.sees)
	d := listPage{layout: layout{Title: "Quarantine", User: v.user, Admin: v.admin}, Q: search, Total: total, Page: n,
		Pages: max(1, (total+h.PageSize-1)/h.PageSize)}
	if f, ok := notices[query.Get("done")]; ok && queue.ValidID(query.Get("id")) {
		d.Notice = strings.Replace(f, "%s", query.Get("id"), 1)
	}
	pageURL := func(n int) string {
		u := url.Values{"page": {strconv.Itoa(n)}}
		if search != "" {
			u.Set("q", search)
		}
		return "?" + u.Encode()
	}
	if n > 1 {
		d.Prev = pageURL(n - 1)
	}
	if n < d.Pages {
		d.Next = pageURL(n + 1)
	}
	for _, m := range msgs {
		d.Messages = append(d.Messages, listRow{Message: m, To: strings.Join(v.recipients(m.Recipients), ", ")})
	}
	return h.render(w, http.StatusOK, "list", d)
}

type messagePage struct {
	layout
	Msg        quarantineview.Message
	Recipients []string
	Checks     []queue.CheckResult
	Headers    string
	Body       renderedBody
	Token      string
	CanAllow   bool
	CanDelete  bool
}

func (h *Handler) serveMessage(w http.ResponseWriter, r *http.Request, p page, v *viewer) error {
	if !h.allow(w, r, p, http.MethodGet, http.MethodHead) {
		return nil
	}
	q, s, err := h.visible(p, v)
	if err != nil {
		return h.failQueue(w, p, err)
	}
	header, err := q.ReadHeader(s.ID)
	if err != nil {
		return h.failQueue(w, p, err)
	}
	body, err := q.ReadBody(s.ID)
	if err != nil {
		return h.failQueue(w, p, err)
	}
	m := quarantineview.Describe(q, s)
	d := messagePage{layout: layout{Title: "Quarantined message " + s.ID, Rel: p.rel, User: v.user, Admin: v.admin},
		Msg: m, Recipients: v.recipients(m.Recipients), Checks: s.Checks,
		Headers: strings.ToValidUTF8(string(header), "\uFFFD"),
		Body:    renderBody(quarantineview.ParseHeader(header), body),
		Token:   h.keys.csrfToken(v.user), CanAllow: s.From != "", CanDelete: v.ownsAll(s)}
	return h.render(w, http.StatusOK, "message", d)
}

// visible returns the queue and the quarantined message of the page, as
// not found when the viewer may not see it (so that its existence does not
// leak).
func (h *Handler) visible(p page, v *viewer) (*queue.Queue, queue.Snapshot, error) {
	q, err := quarantineview.ActiveQueue()
	if err != nil {
		return nil, queue.Snapshot{}, err
	}
	s, err := quarantineview.Quarantined(q, p.id)
	if err == nil && !v.sees(s) {
		err = queue.ErrNotFound
	}
	return q, s, err
}

// crossOrigin refuses POSTs that a browser marks as coming from another
// site (Sec-Fetch-Site, Origin); the CSRF token is the second line.
var crossOrigin = http.NewCrossOriginProtection()

func (h *Handler) serveAction(w http.ResponseWriter, r *http.Request, p page, v *viewer) error {
	if !h.allow(w, r, p, http.MethodPost) {
		return nil
	}
	if err := crossOrigin.Check(r); err != nil || !h.keys.checkCSRF(v.user, r.PostFormValue("token")) {
		h.logger.Warn("quarantine action refused: bad CSRF token or cross-origin request",
			zap.String("user", v.user), zap.String("msg_id", p.id), zap.String("remote_ip", remoteIP(r)))
		return h.fail(w, p, http.StatusForbidden, "The request did not come from this quarantine's page. Reload the page and try again.")
	}
	q, s, err := h.visible(p, v)
	if err != nil {
		return h.failQueue(w, p, err)
	}
	if p.action == "delete" && !v.ownsAll(s) {
		return h.fail(w, p, http.StatusForbidden, "This message is also addressed to others: only an admin may delete it. You may release it.")
	}
	if err := h.act(r.Context(), q, s, p.action, "user "+v.user); err != nil {
		return h.failQueue(w, p, err)
	}
	h.logger.Info("quarantine action", zap.String("action", p.action), zap.String("msg_id", s.ID), zap.String("user", v.user))
	w.Header().Set("Location", p.rel+"?"+url.Values{"done": {p.action}, "id": {s.ID}}.Encode())
	w.WriteHeader(http.StatusSeeOther)
	return nil
}

// actionWait bounds how long a delete waits for a delivery round of the
// message, and an allow list update for the storage.
const actionWait = 30 * time.Second

// act releases, deletes or allow lists and releases a quarantined message;
// by says who asked, for the allow list's comment.
func (h *Handler) act(ctx context.Context, q *queue.Queue, s queue.Snapshot, action, by string) error {
	ctx, cancel := context.WithTimeout(ctx, actionWait)
	defer cancel()
	switch action {
	case "delete":
		_, err := q.Delete(ctx, s.ID, false)
		return err
	case linkAllow:
		comment := "allowed by " + by + " from quarantined message " + s.ID
		if _, err := quarantineview.AllowSender(ctx, h.ctx.Storage(), s, false, comment); err != nil {
			return err
		}
	}
	return q.Release(s.ID)
}
