// Package smtpadmin is the `admin.api.smtp` module: queue and domain
// operations of the running smtp app on Caddy's admin endpoint.
package smtpadmin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/adminhttp"
	"github.com/caddy-smtp/caddy-smtp/modules/internal/quarantineview"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI is the `admin.api.smtp` module: queue and domain operations of
// the running smtp app under /smtp/ on Caddy's admin endpoint (see
// docs/admin-api.md).
//
//	GET    /smtp/queue[?filters]         list the queue (filters: see Selection)
//	GET    /smtp/queue/summary[?filters] messages per domain and age
//	POST   /smtp/queue/flush             make every message due now
//	POST   /smtp/queue/<action>          delete, hold, release, flush or requeue
//	                                     the messages a Selection names
//	GET    /smtp/queue/<id>[?body=1]     envelope and header (and body)
//	DELETE /smtp/queue/<id>[?bounce=1]   delete (and bounce to the sender)
//	POST   /smtp/queue/<id>/flush        make one message due now
//	POST   /smtp/queue/<id>/hold         stop delivering a message
//	POST   /smtp/queue/<id>/release      resume it (due now)
//	POST   /smtp/queue/<id>/requeue      route again, fresh attempt now
//	GET    /smtp/domains                 held domains
//	POST   /smtp/domains/<domain>/hold   stop delivering to a domain
//	POST   /smtp/domains/<domain>/release
//	...    /smtp/quarantine...           quarantined messages (quarantine.go)
//
// The app is looked up at request time, so the endpoints follow config
// reloads.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.smtp",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// adminWait bounds how long a hold or delete waits for a delivery round of
// the message to finish.
const adminWait = 30 * time.Second

// Routes returns the admin routes.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/smtp/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// MessageDetail is the response of GET /smtp/queue/<id>: the message's
// snapshot, its header section and, when asked for, its body. Text that is
// not valid UTF-8 is given in base64 in the *_base64 field instead.
type MessageDetail struct {
	queue.Snapshot
	Headers       string `json:"headers,omitempty"`
	HeadersBase64 string `json:"headers_base64,omitempty"`
	Body          string `json:"body,omitempty"`
	BodyBase64    string `json:"body_base64,omitempty"`
}

// HeldDomain is an element of the response of GET /smtp/domains.
type HeldDomain struct {
	Domain string `json:"domain"`
	// Messages and Recipients count the queued messages with pending
	// recipients in the domain, and those recipients.
	Messages   int `json:"messages"`
	Recipients int `json:"recipients"`
}

// ActionResult is the response of the POST and DELETE endpoints; fields
// that do not apply to the action are left out.
type ActionResult struct {
	ID      string `json:"id,omitempty"`
	Domain  string `json:"domain,omitempty"`
	Flushed *int   `json:"flushed,omitempty"`
	Held    *bool  `json:"held,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
	// Requeued is set when a message was requeued.
	Requeued bool `json:"requeued,omitempty"`
	// Bounced is the number of recipients the DSN of a deletion reports.
	Bounced *int `json:"bounced,omitempty"`
}

func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	// Split the escaped path, so that an escaped '/' stays in its segment.
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.EscapedPath(), "/smtp/"), "/"), "/")
	for i, p := range parts {
		s, err := url.PathUnescape(p)
		if err != nil {
			return adminhttp.Error(http.StatusBadRequest, fmt.Errorf("path %q: %v", r.URL.EscapedPath(), err))
		}
		parts[i] = s
	}
	switch {
	case len(parts) == 1 && parts[0] == "queue":
		return a.listQueue(w, r)
	case len(parts) == 2 && parts[0] == "queue" && parts[1] == "summary":
		return a.summary(w, r)
	case len(parts) == 2 && parts[0] == "queue" && bulkActions[parts[1]]:
		return a.bulk(w, r, parts[1]) // bulk.go
	case len(parts) == 2 && parts[0] == "queue" && parts[1] != "":
		return a.message(w, r, parts[1])
	case len(parts) == 3 && parts[0] == "queue" && parts[1] != "":
		return a.messageAction(w, r, parts[1], parts[2])
	case len(parts) == 1 && parts[0] == "domains":
		return a.listDomains(w, r)
	case len(parts) == 3 && parts[0] == "domains" && parts[1] != "":
		return a.domainAction(w, r, parts[1], parts[2])
	case parts[0] == "quarantine":
		return a.quarantine(w, r, parts[1:]) // quarantine.go
	}
	return adminhttp.Error(http.StatusNotFound, fmt.Errorf("resource not found: %s", r.URL.Path))
}

func (a *adminAPI) listQueue(w http.ResponseWriter, r *http.Request) error {
	q, err := queueFor(w, r, http.MethodGet)
	if err != nil {
		return err
	}
	f, filtered, err := queryFilter(r)
	if err != nil {
		return err
	}
	fleet, err := boolParam(r, "fleet")
	if err != nil {
		return err
	}
	if fleet {
		// Every node's messages, from the shared store.
		all, err := q.FleetSnapshots()
		if errors.Is(err, queue.ErrNotShared) {
			return adminhttp.Error(http.StatusBadRequest, errors.New("fleet=1: the queue store is not shared (only the postgres store is)"))
		}
		if err != nil {
			return adminhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("reading the fleet's queue: %w", err))
		}
		now, out := time.Now(), all[:0]
		for _, s := range all {
			if !filtered || f.Match(s, now) {
				out = append(out, s)
			}
		}
		return adminhttp.WriteJSON(w, out)
	}
	if !filtered {
		return adminhttp.WriteJSON(w, q.Snapshots())
	}
	return adminhttp.WriteJSON(w, q.Select(f))
}

func (a *adminAPI) message(w http.ResponseWriter, r *http.Request, id string) error {
	q, err := queueFor(w, r, http.MethodGet, http.MethodDelete)
	if err != nil {
		return err
	}
	if r.Method == http.MethodDelete {
		bounce, err := boolParam(r, "bounce")
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), adminWait)
		defer cancel()
		n, err := q.Delete(ctx, id, bounce)
		if err != nil {
			return queueError(err)
		}
		return adminhttp.WriteJSON(w, ActionResult{ID: id, Deleted: true, Bounced: &n})
	}
	withBody, err := boolParam(r, "body")
	if err != nil {
		return err
	}
	d, _, err := messageDetail(q, id, withBody)
	if err != nil {
		return err
	}
	return adminhttp.WriteJSON(w, d)
}

// messageDetail returns the view of a queued message, and its header
// section.
func messageDetail(q *queue.Queue, id string, withBody bool) (MessageDetail, []byte, error) {
	snap, err := q.Snapshot(id)
	if err != nil {
		return MessageDetail{}, nil, queueError(err)
	}
	header, err := q.ReadHeader(id)
	var body []byte
	if err == nil && withBody {
		body, err = q.ReadBody(id)
	}
	if err != nil {
		return MessageDetail{Snapshot: snap}, nil, queueError(err)
	}
	return NewMessageDetail(snap, header, body, withBody), header, nil
}

// NewMessageDetail makes the view of a message from its snapshot, its
// header section and, withBody, its body.
func NewMessageDetail(snap queue.Snapshot, header, body []byte, withBody bool) MessageDetail {
	d := MessageDetail{Snapshot: snap}
	d.Headers, d.HeadersBase64 = textOrBase64(header)
	if withBody {
		d.Body, d.BodyBase64 = textOrBase64(body)
	}
	return d
}

func (a *adminAPI) messageAction(w http.ResponseWriter, r *http.Request, id, action string) error {
	if action != "flush" && action != "hold" && action != "release" && action != "requeue" {
		return adminhttp.Error(http.StatusNotFound, fmt.Errorf("resource not found: %s", r.URL.Path))
	}
	if action == "flush" {
		return a.flush(w, r, id)
	}
	q, err := queueFor(w, r, http.MethodPost)
	if err != nil {
		return err
	}
	if action == "requeue" {
		ctx, cancel := context.WithTimeout(r.Context(), adminWait)
		defer cancel()
		if err := q.Requeue(ctx, id); err != nil {
			return queueError(err)
		}
		return adminhttp.WriteJSON(w, ActionResult{ID: id, Requeued: true})
	}
	held := action == "hold"
	if held {
		ctx, cancel := context.WithTimeout(r.Context(), adminWait)
		defer cancel()
		err = q.Hold(ctx, id)
	} else {
		err = q.Release(id)
	}
	if err != nil {
		return queueError(err)
	}
	return adminhttp.WriteJSON(w, ActionResult{ID: id, Held: &held})
}

func (a *adminAPI) flush(w http.ResponseWriter, r *http.Request, id string) error {
	q, err := queueFor(w, r, http.MethodPost)
	if err != nil {
		return err
	}
	n, err := q.Flush(id)
	if err != nil {
		return queueError(err)
	}
	return adminhttp.WriteJSON(w, ActionResult{ID: id, Flushed: &n})
}

func (a *adminAPI) listDomains(w http.ResponseWriter, r *http.Request) error {
	q, err := queueFor(w, r, http.MethodGet)
	if err != nil {
		return err
	}
	held := q.HeldDomains()
	counts := make(map[string]*HeldDomain, len(held))
	out := make([]HeldDomain, len(held))
	for i, d := range held {
		out[i].Domain = d
		counts[d] = &out[i]
	}
	for _, m := range q.Snapshots() {
		seen := make(map[string]bool)
		for _, rc := range m.Recipients {
			c := counts[queue.Domain(rc.Addr)]
			if c == nil || rc.Status != "pending" {
				continue
			}
			c.Recipients++
			if !seen[c.Domain] {
				seen[c.Domain] = true
				c.Messages++
			}
		}
	}
	return adminhttp.WriteJSON(w, out) // sorted: HeldDomains is
}

func (a *adminAPI) domainAction(w http.ResponseWriter, r *http.Request, domain, action string) error {
	if action != "hold" && action != "release" {
		return adminhttp.Error(http.StatusNotFound, fmt.Errorf("resource not found: %s", r.URL.Path))
	}
	q, err := queueFor(w, r, http.MethodPost)
	if err != nil {
		return err
	}
	d, err := queue.NormalizeDomain(domain)
	if err != nil {
		return adminhttp.Error(http.StatusBadRequest, err)
	}
	held := action == "hold"
	if held {
		err = q.HoldDomain(d)
	} else {
		err = q.ReleaseDomain(d)
	}
	if err != nil {
		return queueError(err)
	}
	return adminhttp.WriteJSON(w, ActionResult{Domain: d, Held: &held})
}

// queueFor checks the method of a request and returns the queue it acts
// on.
func queueFor(w http.ResponseWriter, r *http.Request, methods ...string) (*queue.Queue, error) {
	if err := adminhttp.Allow(w, r, methods...); err != nil {
		return nil, err
	}
	return activeQueue()
}

// activeQueue returns the queue of the smtp app of the running config.
func activeQueue() (*queue.Queue, error) {
	q, err := quarantineview.ActiveQueue()
	if errors.Is(err, quarantineview.ErrNoApp) || errors.Is(err, quarantineview.ErrNoQueue) {
		return nil, adminhttp.Error(http.StatusNotFound, err)
	}
	if err != nil {
		return nil, adminhttp.Error(http.StatusInternalServerError, err)
	}
	return q, nil
}

// queueError turns an error of a queue operation into an API error.
func queueError(err error) error {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, queue.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, queue.ErrHeld):
		status = http.StatusConflict
	case errors.Is(err, queue.ErrInvalidDomain):
		status = http.StatusBadRequest
	case errors.Is(err, queue.ErrBusy), errors.Is(err, queue.ErrClosed):
		status = http.StatusServiceUnavailable
	}
	return adminhttp.Error(status, err)
}

// boolParam reads a query parameter such as ?body=1; absent means false.
func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, adminhttp.Error(http.StatusBadRequest, fmt.Errorf("query parameter %s: %q is not a boolean", name, v))
	}
	return b, nil
}

// textOrBase64 returns b as text when it is valid UTF-8, else in base64.
func textOrBase64(b []byte) (text, b64 string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return "", base64.StdEncoding.EncodeToString(b)
}

// Interface guards
var (
	_ caddy.Module      = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
