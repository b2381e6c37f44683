package smtpadmin

// Operations on many queued messages at once, chosen by ID or by filters
// (the `--all` of `caddy smtp queue delete|hold|release|flush|requeue`),
// and the per-domain summary.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/adminhttp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// bulkActions are the actions of POST /smtp/queue/<action>.
var bulkActions = map[string]bool{"delete": true, "hold": true, "release": true, "flush": true, "requeue": true}

// Selection is the request body of POST /smtp/queue/<action>: the IDs of
// the messages to act on, or All with filters (every filter given must
// match). The same filters are query parameters of GET /smtp/queue and
// GET /smtp/queue/summary (older_than=1h, held=1, ...).
type Selection struct {
	// IDs names the messages.
	IDs []string `json:"ids,omitempty"`
	// All selects every message that the filters match; quarantined
	// messages only with Quarantined.
	All bool `json:"all,omitempty"`
	// From is the envelope sender: an address, "@domain" or "<>".
	From string `json:"from,omitempty"`
	// To is a pending recipient: an address or "@domain".
	To string `json:"to,omitempty"`
	// Domain is the domain of a pending recipient.
	Domain string `json:"domain,omitempty"`
	// OlderThan selects messages queued for longer than this ("90m", "2d").
	OlderThan caddy.Duration `json:"older_than,omitempty"`
	// Held selects the messages held by an administrator.
	Held bool `json:"held,omitempty"`
	// Quarantined selects the quarantined messages.
	Quarantined bool `json:"quarantined,omitempty"`
	// Bounce, for delete, sends the senders a DSN for the recipients not
	// delivered yet.
	Bounce bool `json:"bounce,omitempty"`
}

func (s Selection) filter() queue.Filter {
	return queue.Filter{From: s.From, To: s.To, Domain: s.Domain, OlderThan: time.Duration(s.OlderThan),
		Held: s.Held, Quarantined: s.Quarantined}
}

// BulkResult is the response of POST /smtp/queue/<action> with a body.
type BulkResult struct {
	Action string `json:"action"`
	// Matched is the number of messages selected; Done how many of them
	// the action changed (a flush leaves a message that is being
	// delivered to its round).
	Matched int `json:"matched"`
	Done    int `json:"done"`
	// Skipped counts the messages that filters selected and that a flush
	// or requeue passed over because they are held or all their pending
	// recipients are in held domains.
	Skipped int `json:"skipped,omitempty"`
	// Bounced is the number of recipients that the DSNs of a delete with
	// bounce report.
	Bounced int `json:"bounced,omitempty"`
	// Errors are the messages the action failed for.
	Errors []BulkError `json:"errors,omitempty"`
}

// BulkError is the failure of a bulk action for one message.
type BulkError struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// bulk runs an action on the messages a Selection names. POST
// /smtp/queue/flush without a body keeps its old meaning: every message.
func (a *adminAPI) bulk(w http.ResponseWriter, r *http.Request, action string) error {
	q, err := queueFor(w, r, http.MethodPost)
	if err != nil {
		return err
	}
	var sel Selection
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return adminhttp.Error(http.StatusBadRequest, err)
	}
	if len(raw) == 0 && action == "flush" {
		return a.flush(w, r, "")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sel); err != nil {
		return adminhttp.Error(http.StatusBadRequest, fmt.Errorf("request body: %v", err))
	}
	filtered := sel.filter() != (queue.Filter{})
	switch {
	case len(sel.IDs) > 0 && (sel.All || filtered):
		return adminhttp.Error(http.StatusBadRequest, errors.New("give either ids or all with filters, not both"))
	case len(sel.IDs) == 0 && !sel.All:
		return adminhttp.Error(http.StatusBadRequest, errors.New("give the ids of the messages, or all (with filters)"))
	case sel.Bounce && action != "delete":
		return adminhttp.Error(http.StatusBadRequest, fmt.Errorf("bounce applies to delete, not %s", action))
	}
	ids := sel.IDs
	if sel.All {
		for _, s := range q.Select(sel.filter()) {
			ids = append(ids, s.ID)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminWait)
	defer cancel()
	res := BulkResult{Action: action, Matched: len(ids)}
	for _, id := range ids {
		done, bounced, err := bulkOne(ctx, q, action, id, sel.Bounce)
		switch {
		case err == nil:
			res.Done += done
			res.Bounced += bounced
		case sel.All && errors.Is(err, queue.ErrHeld):
			res.Skipped++
		default:
			res.Errors = append(res.Errors, BulkError{ID: id, Error: err.Error()})
		}
	}
	return adminhttp.WriteJSON(w, res)
}

// bulkOne runs an action on one message and returns how many messages it
// changed (0 or 1) and, for a delete with bounce, how many recipients the
// DSN reports.
func bulkOne(ctx context.Context, q *queue.Queue, action, id string, bounce bool) (done, bounced int, err error) {
	switch action {
	case "flush":
		done, err = q.Flush(id)
		return done, 0, err
	case "delete":
		bounced, err = q.Delete(ctx, id, bounce)
	case "hold":
		err = q.Hold(ctx, id)
	case "release":
		err = q.Release(id)
	case "requeue":
		err = q.Requeue(ctx, id)
	}
	return 1, bounced, err
}

// summary is GET /smtp/queue/summary: the selected messages (by default
// all but the quarantined ones) per recipient domain and age.
func (a *adminAPI) summary(w http.ResponseWriter, r *http.Request) error {
	q, err := queueFor(w, r, http.MethodGet)
	if err != nil {
		return err
	}
	f, _, err := queryFilter(r)
	if err != nil {
		return err
	}
	return adminhttp.WriteJSON(w, queue.Summarize(q.Select(f), time.Now()))
}

// queryFilter reads the filters of a Selection from the query parameters;
// filtered reports whether any was given.
func queryFilter(r *http.Request) (f queue.Filter, filtered bool, err error) {
	v := r.URL.Query()
	f.From, f.To, f.Domain = v.Get("from"), v.Get("to"), v.Get("domain")
	if s := v.Get("older_than"); s != "" {
		if f.OlderThan, err = caddy.ParseDuration(s); err != nil || f.OlderThan < 0 {
			return f, false, adminhttp.Error(http.StatusBadRequest, fmt.Errorf("query parameter older_than: %q is not a duration", s))
		}
	}
	if f.Held, err = boolParam(r, "held"); err != nil {
		return f, false, err
	}
	if f.Quarantined, err = boolParam(r, "quarantined"); err != nil {
		return f, false, err
	}
	return f, f != (queue.Filter{}), nil
}
