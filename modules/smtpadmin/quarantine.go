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
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/adminhttp"

	"github.com/caddyserver/caddy/v2"

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
type QuarantinedMessage struct {
	ID         string   `json:"id"`
	From       string   `json:"from"`
	Recipients []string `json:"recipients"`
	// Subject is the Subject header field, RFC 2047 words decoded; Date is
	// the Date header field as the sender wrote it.
	Subject string    `json:"subject"`
	Date    string    `json:"date,omitempty"`
	Size    int64     `json:"size"`
	Arrived time.Time `json:"arrived"`
	// Quarantined is when the check quarantined the message; Check and
	// Reason are that check and what it said.
	Quarantined time.Time `json:"quarantined"`
	Check       string    `json:"check"`
	Reason      string    `json:"reason,omitempty"`
	// Results sums up what every check found, in order: "spf=pass
	// dkim=none dmarc=fail p=quarantine" (a check without a result shows
	// its verdict).
	Results string `json:"results,omitempty"`
}

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
	search := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	out := QuarantineList{Offset: offset, Limit: limit, Messages: []QuarantinedMessage{}}
	for _, s := range q.Quarantined() {
		m := quarantinedMessage(q, s)
		if search != "" && !matches(m, search) {
			continue
		}
		if out.Total >= offset && len(out.Messages) < limit {
			out.Messages = append(out.Messages, m)
		}
		out.Total++
	}
	return adminhttp.WriteJSON(w, out)
}

// quarantinedMessage describes a quarantined message for the list; the
// header fields are read from the spool (a message deleted meanwhile has
// none).
func quarantinedMessage(q *queue.Queue, s queue.Snapshot) QuarantinedMessage {
	m := QuarantinedMessage{ID: s.ID, From: s.From, Size: s.Size, Arrived: s.Arrived,
		Recipients: make([]string, 0, len(s.Recipients))}
	for _, rc := range s.Recipients {
		m.Recipients = append(m.Recipients, rc.Addr)
	}
	if s.Quarantine != nil {
		m.Quarantined, m.Check, m.Reason = s.Quarantine.At, s.Quarantine.Check, s.Quarantine.Reason
	}
	results := make([]string, 0, len(s.Checks))
	for _, c := range s.Checks {
		results = append(results, c.Check+"="+cmp.Or(c.Result, c.Verdict))
	}
	m.Results = strings.Join(results, " ")
	if header, err := q.ReadHeader(s.ID); err == nil {
		h := parseHeader(header)
		m.Subject, m.Date = decodeHeader(h.Get("Subject")), h.Get("Date")
	}
	return m
}

// matches reports whether the lowercased search text is in the sender, a
// recipient or the subject.
func matches(m QuarantinedMessage, search string) bool {
	if strings.Contains(strings.ToLower(m.From), search) || strings.Contains(strings.ToLower(m.Subject), search) {
		return true
	}
	for _, rc := range m.Recipients {
		if strings.Contains(strings.ToLower(rc), search) {
			return true
		}
	}
	return false
}

// parseHeader reads a header section as ReadHeader returns it; a malformed
// section gives the fields before the fault.
func parseHeader(header []byte) textproto.MIMEHeader {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(bytes.Clone(header), "\r\n\r\n"...))))
	h, _ := r.ReadMIMEHeader()
	return h
}

// decodeHeader decodes the RFC 2047 encoded words of a header field; a
// field it cannot decode (an unknown charset) is returned as it is.
func decodeHeader(v string) string {
	d, err := new(mime.WordDecoder).DecodeHeader(v)
	if err != nil {
		return v
	}
	return d
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
	return adminhttp.WriteJSON(w, QuarantineDetail{MessageDetail: d, Subject: decodeHeader(parseHeader(header).Get("Subject"))})
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
	if s.From == "" {
		return lists.Entry{}, adminhttp.Error(http.StatusConflict, fmt.Errorf("message %s has the null sender: there is no sender to allow", s.ID))
	}
	e := lists.Entry{Kind: lists.KindSender, Value: s.From, Comment: "allowed from quarantined message " + s.ID}
	if domain {
		e.Kind, e.Value = lists.KindSenderDomain, queue.Domain(s.From)
	}
	if _, err := lists.Normalize(e); err != nil {
		return lists.Entry{}, adminhttp.Error(http.StatusConflict, fmt.Errorf("message %s: the sender cannot be allow listed: %w", s.ID, err))
	}
	cctx := caddy.ActiveContext()
	if cctx.Context == nil {
		return lists.Entry{}, adminhttp.Error(http.StatusServiceUnavailable, errors.New("no config is running"))
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminWait)
	defer cancel()
	e, err = lists.AddEntry(ctx, cctx.Storage(), lists.Allow, e)
	if err != nil {
		return lists.Entry{}, adminhttp.Error(http.StatusInternalServerError, err)
	}
	return e, nil
}

// quarantinedSnapshot returns the snapshot of a quarantined message; 404
// when the message is not in the queue or not quarantined.
func quarantinedSnapshot(q *queue.Queue, id string) (queue.Snapshot, error) {
	s, err := q.Snapshot(id)
	if err != nil {
		return s, queueError(err)
	}
	if s.State != queue.StateQuarantine {
		return s, adminhttp.Error(http.StatusNotFound, fmt.Errorf("message %s is not quarantined (state %s)", id, s.State))
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
