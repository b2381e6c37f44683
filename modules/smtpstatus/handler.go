// Package smtpstatus is the `http.handlers.smtp_status` module: a status
// page of the smtp app (queue, deliveries by result, the TLS share of
// inbound and outbound mail per domain) drawn from counters kept in
// Caddy's storage. See docs/status-page.md.
package smtpstatus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the `http.handlers.smtp_status` module: it serves the status
// page (HTML with SVG charts, no script) and, with `?format=json`, the
// same data as JSON. It has no access control of its own: mount it in a
// site behind Caddy's authentication (`basic_auth`), as the example in
// docs/status-page.md does.
//
// The handler also runs the counting. Provision attaches the process's
// one collector (see collector) to the smtp app of the handler's config,
// and Cleanup detaches it. The handler rather than an smtp-side guest
// module, because the counts exist for the page: the smtp config needs no
// change to get one, and a node that serves no page counts nothing and
// writes nothing. In a fleet, give every node the handler (a site on
// loopback is enough) so that each one's counts reach the shared storage;
// a page then shows the sum. The collector is attached at most once per
// app, so two handlers in one config, or the overlap of a reload, do not
// count anything twice.
type Handler struct {
	app *smtpapp.App // nil when the config has no smtp app
	col *collector
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.smtp_status",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the config's smtp app and attaches the collector to it.
// A config without an smtp app serves the counters in storage (those of
// the nodes sharing it) without a queue.
func (h *Handler) Provision(ctx caddy.Context) error {
	// AppIfConfigured, not App: App would add an smtp app to a config
	// that has none.
	mod, err := ctx.AppIfConfigured("smtp")
	switch {
	case errors.Is(err, caddy.ErrNotConfigured):
	case err != nil:
		return fmt.Errorf("smtp_status: %w", err)
	default:
		app, ok := mod.(*smtpapp.App)
		if !ok {
			return fmt.Errorf("smtp_status: the smtp app is a %T", mod)
		}
		h.app = app
	}
	key, err := nodeKey()
	if err != nil {
		return fmt.Errorf("smtp_status: %w", err)
	}
	logger := ctx.Logger()
	val, _, err := collectors.LoadOrNew(collectorKey, func() (caddy.Destructor, error) {
		return newCollector(ctx.Storage(), key, logger, time.Now, flushInterval), nil
	})
	if err != nil {
		return fmt.Errorf("smtp_status: %w", err)
	}
	h.col = val.(*collector)
	h.col.use(ctx.Storage())
	if h.app != nil {
		h.col.attach(h.app)
	}
	return nil
}

// Cleanup detaches the collector and writes its counters; the last
// handler to go stops it.
func (h *Handler) Cleanup() error {
	if h.col == nil {
		return nil
	}
	if h.app != nil {
		h.col.detach(h.app)
	}
	h.col.flushAndLog()
	_, err := collectors.Delete(collectorKey)
	return err
}

// ServeHTTP serves the page, or its data with `?format=json`.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("smtp_status: method %s", r.Method))
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "html" {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("smtp_status: unknown format %q (json or html)", format))
	}
	counts, nodes, err := h.col.snapshot(r.Context())
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("smtp_status: %w", err))
	}
	now := time.Now()
	s := newStatus(counts, now)
	s.Nodes = nodes
	s.Queue = h.queueStatus(now)

	var buf bytes.Buffer
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if format == "json" {
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		err = enc.Encode(s)
		hdr.Set("Content-Type", "application/json")
	} else {
		err = pageTemplate.Execute(&buf, pageData{Status: s, Charts: charts(s)})
		hdr.Set("Content-Type", "text/html; charset=utf-8")
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
		hdr.Set("Referrer-Policy", "no-referrer")
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("smtp_status: %w", err))
	}
	if r.Method == http.MethodHead {
		return nil
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// queueStatus reads the queue of the config's smtp app; nil without one.
func (h *Handler) queueStatus(now time.Time) *QueueStatus {
	if h.app == nil || h.app.RunningQueue() == nil {
		return nil
	}
	n, oldest := h.app.RunningQueue().Stats()
	qs := &QueueStatus{Messages: n}
	if !oldest.IsZero() {
		t := oldest.UTC()
		qs.Oldest = &t
		qs.OldestSeconds = int64(max(0, now.Sub(oldest)) / time.Second)
	}
	return qs
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
