package smtpadmin

// The quarantine endpoints: the messages that a check quarantined, kept
// held in the queue until an administrator releases or deletes them, or
// until the app's quarantine_retention has passed.
//
//	GET    /smtp/quarantine[?q=&offset=&limit=]   list (newest first)
//	GET    /smtp/quarantine/<id>[?body=1]         the message view
//	POST   /smtp/quarantine/<id>/release          deliver to the original recipients
//	DELETE /smtp/quarantine/<id>                  delete (no DSN)
//	POST   /smtp/quarantine/<id>/allow-sender[?domain=1]
//	                                              allow list the sender (or its domain), then release
//
// An ID that is not quarantined (released, delivered, never quarantined)
// is 404.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/adminhttp"
	"github.com/caddy-smtp/caddy-smtp/modules/internal/quarantineview"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/lists"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Paging of GET /smtp/quarantine.
const (
	defaultQuarantineLimit = 50
	maxQuarantineLimit     = 500
)

// QuarantineList is the response of GET /smtp/quarantine.
type QuarantineList struct {
	// Total is the number of quarantined messages that match ?q=; Offset
	// and Limit say which of them Messages holds.
	Total    int                  `json:"total"`
	Offset   int                  `json:"offset"`
	Limit    int                  `json:"limit"`
	Messages []QuarantinedMessage `json:"messages"`
}

// QuarantinedMessage is an element of QuarantineList.
type QuarantinedMessage = quarantineview.Message

// QuarantineDetail is the response of GET /smtp/quarantine/<id>: the view
// of GET /smtp/queue/<id> and the decoded subject.
type QuarantineDetail struct {
	MessageDetail
	Subject string `json:"subject"`
}

// QuarantineResult is the response of the POST and DELETE endpoints.
type QuarantineResult struct {
	ID       string `json:"id"`
	Released bool   `json:"released,omitempty"`
	Deleted  bool   `json:"deleted,omitempty"`
	// Allowed is the allow list's entry that allow-sender added (or found).
	Allowed *lists.Entry `json:"allowed,omitempty"`
}

func (a *adminAPI) quarantine(w http.ResponseWriter, r *http.Request, parts []string) error {
	switch {
	case len(parts) == 0:
		return a.listQuarantine(w, r)
	case len(parts) == 1 && parts[0] != "":
		return a.quarantined(w, r, parts[0])
	case len(parts) == 2 && parts[0] != "" && (parts[1] == "release" || parts[1] == "allow-sender"):
		return a.quarantineAction(w, r, parts[0], parts[1])
	}
	return adminhttp.Error(http.StatusNotFound, fmt.Errorf("resource not found: %s", r.URL.Path))
}

func (a *adminAPI) listQuarantine(w http.ResponseWriter, r *http.Request) error {
	q, err := queueFor(w, r, http.MethodGet)
	if err != nil {
		return err
	}
	offset, err := intParam(r, "offset", 0, 0, math.MaxInt)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", defaultQuarantineLimit, 1, maxQuarantineLimit)
	if err != nil {
		return err
	}
	out := QuarantineList{Offset: offset, Limit: limit}
	out.Total, out.Messages = quarantineview.List(q, r.URL.Query().Get("q"), offset, limit, nil)
	return adminhttp.WriteJSON(w, out)
}

func (a *adminAPI) quarantined(w http.ResponseWriter, r *http.Request, id string) error {
	q, err := queueFor(w, r, http.MethodGet, http.MethodDelete)
	if err != nil {
		return err
	}
	if _, err := quarantinedSnapshot(q, id); err != nil {
		return err
	}
	if r.Method == http.MethodDelete {
		ctx, cancel := context.WithTimeout(r.Context(), adminWait)
		defer cancel()
		if _, err := q.Delete(ctx, id, false); err != nil {
			return queueError(err)
		}
		return adminhttp.WriteJSON(w, QuarantineResult{ID: id, Deleted: true})
	}
	withBody, err := boolParam(r, "body")
	if err != nil {
		return err
	}
	d, header, err := messageDetail(q, id, withBody)
	if err != nil {
		return err
	}
	return adminhttp.WriteJSON(w, QuarantineDetail{MessageDetail: d, Subject: quarantineview.DecodeHeader(quarantineview.ParseHeader(header).Get("Subject"))})
}

func (a *adminAPI) quarantineAction(w http.ResponseWriter, r *http.Request, id, action string) error {
	q, err := queueFor(w, r, http.MethodPost)
	if err != nil {
		return err
	}
	s, err := quarantinedSnapshot(q, id)
	if err != nil {
		return err
	}
	res := QuarantineResult{ID: id, Released: true}
	if action == "allow-sender" {
		e, err := allowSender(r, s)
		if err != nil {
			return err
		}
		res.Allowed = &e
	}
	if err := q.Release(id); err != nil {
		return queueError(err)
	}
	return adminhttp.WriteJSON(w, res)
}

// allowSender adds the envelope sender of a quarantined message, or with
// ?domain=1 its domain, to the allow list in the running config's storage.
func allowSender(r *http.Request, s queue.Snapshot) (lists.Entry, error) {
	domain, err := boolParam(r, "domain")
	if err != nil {
		return lists.Entry{}, err
	}
	storage, err := adminhttp.ActiveStorage()
	if err != nil {
		return lists.Entry{}, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminWait)
	defer cancel()
	e, err := quarantineview.AllowSender(ctx, storage, s, domain, "allowed from quarantined message "+s.ID)
	if errors.Is(err, quarantineview.ErrCannotAllow) {
		return lists.Entry{}, adminhttp.Error(http.StatusConflict, err)
	}
	if err != nil {
		return lists.Entry{}, adminhttp.Error(http.StatusInternalServerError, err)
	}
	return e, nil
}

// quarantinedSnapshot returns the snapshot of a quarantined message; 404
// when the message is not in the queue or not quarantined.
func quarantinedSnapshot(q *queue.Queue, id string) (queue.Snapshot, error) {
	s, err := quarantineview.Quarantined(q, id)
	if errors.Is(err, quarantineview.ErrNotQuarantined) {
		return s, adminhttp.Error(http.StatusNotFound, err)
	}
	if err != nil {
		return s, queueError(err)
	}
	return s, nil
}

// intParam reads an integer query parameter in [lo, hi]; absent means def.
func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, adminhttp.Error(http.StatusBadRequest, fmt.Errorf("query parameter %s: %q is not a number from %d to %d", name, v, lo, hi))
	}
	return n, nil
}
