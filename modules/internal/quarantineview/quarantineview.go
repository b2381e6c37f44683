// Package quarantineview holds what the two faces of the quarantine share:
// the admin API (modules/smtpadmin) and the web page
// (modules/smtpquarantine). It finds the running queue, describes, lists
// and searches the quarantined messages, and releases a message or allow
// lists its sender.
package quarantineview

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/textproto"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/lists"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Errors of the lookups and actions; callers map them to their statuses.
var (
	// ErrNoApp: the running config has no smtp app.
	ErrNoApp = errors.New("no smtp app in the running config")
	// ErrNoQueue: the smtp app has not started its queue.
	ErrNoQueue = errors.New("the smtp app has no running queue")
	// ErrNotQuarantined: the message is in the queue but not (or no
	// longer) quarantined.
	ErrNotQuarantined = errors.New("message is not quarantined")
	// ErrCannotAllow: the sender of the message cannot be allow listed
	// (the null sender, or an address the allow list refuses).
	ErrCannotAllow = errors.New("the sender cannot be allow listed")
)

// ActiveApp returns the smtp app of the running config, with its queue
// started; the lookup happens at each call, so it follows config reloads.
func ActiveApp() (*smtpapp.App, error) {
	// AppIfConfigured, not App: App would make and provision a new smtp
	// app when the running config has none.
	app, err := caddy.ActiveContext().AppIfConfigured("smtp")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, ErrNoApp
	}
	if err != nil {
		return nil, err
	}
	a, ok := app.(*smtpapp.App)
	if !ok || a.RunningQueue() == nil {
		return nil, ErrNoQueue
	}
	return a, nil
}

// ActiveQueue returns the queue of the smtp app of the running config.
func ActiveQueue() (*queue.Queue, error) {
	a, err := ActiveApp()
	if err != nil {
		return nil, err
	}
	return a.RunningQueue(), nil
}

// Message describes a quarantined message for a list.
type Message struct {
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
	// Server is the SMTP server that accepted the message (its routes
	// deliver it).
	Server string `json:"-"`
}

// Describe describes a quarantined message; the header fields are read
// from the spool (a message deleted meanwhile has none).
func Describe(q *queue.Queue, s queue.Snapshot) Message {
	m := Message{ID: s.ID, From: s.From, Size: s.Size, Arrived: s.Arrived, Server: s.Server,
		Recipients: make([]string, 0, len(s.Recipients))}
	for _, rc := range s.Recipients {
		m.Recipients = append(m.Recipients, rc.Addr)
	}
	if s.Quarantine != nil {
		m.Quarantined, m.Check, m.Reason = s.Quarantine.At, s.Quarantine.Check, s.Quarantine.Reason
	}
	m.Results = Results(s.Checks)
	if header, err := q.ReadHeader(s.ID); err == nil {
		h := ParseHeader(header)
		m.Subject, m.Date = DecodeHeader(h.Get("Subject")), h.Get("Date")
	}
	return m
}

// Results sums up check results in one line: "spf=pass dkim=none".
func Results(checks []queue.CheckResult) string {
	results := make([]string, 0, len(checks))
	for _, c := range checks {
		results = append(results, c.Check+"="+cmp.Or(c.Result, c.Verdict))
	}
	return strings.Join(results, " ")
}

// List returns the quarantined messages, newest quarantine first, that
// keep passes (nil: all) and that match the search text: how many there
// are, and those from offset on, at most limit.
func List(q *queue.Queue, search string, offset, limit int, keep func(queue.Snapshot) bool) (total int, page []Message) {
	search = strings.ToLower(strings.TrimSpace(search))
	page = []Message{}
	for _, s := range q.Quarantined() {
		if keep != nil && !keep(s) {
			continue
		}
		m := Describe(q, s)
		if search != "" && !Matches(m, search) {
			continue
		}
		if total >= offset && len(page) < limit {
			page = append(page, m)
		}
		total++
	}
	return total, page
}

// Matches reports whether the lowercased search text is in the sender, a
// recipient or the subject.
func Matches(m Message, search string) bool {
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

// ParseHeader reads a header section as queue.ReadHeader returns it; a
// malformed section gives the fields before the fault.
func ParseHeader(header []byte) textproto.MIMEHeader {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(bytes.Clone(header), "\r\n\r\n"...))))
	h, _ := r.ReadMIMEHeader()
	return h
}

// DecodeHeader decodes the RFC 2047 encoded words of a header field; a
// field it cannot decode (an unknown charset) is returned as it is.
func DecodeHeader(v string) string {
	d, err := new(mime.WordDecoder).DecodeHeader(v)
	if err != nil {
		return v
	}
	return d
}

// Quarantined returns the snapshot of a quarantined message: an error
// wrapping queue.ErrNotFound when it is not in the queue, ErrNotQuarantined
// when it is not quarantined.
func Quarantined(q *queue.Queue, id string) (queue.Snapshot, error) {
	s, err := q.Snapshot(id)
	if err != nil {
		return s, err
	}
	if s.State != queue.StateQuarantine {
		return s, fmt.Errorf("message %s: %w (state %s)", id, ErrNotQuarantined, s.State)
	}
	return s, nil
}

// AllowSender adds the envelope sender of a quarantined message, or with
// domain its domain, to the allow list kept in storage, and returns the
// entry added (or found).
func AllowSender(ctx context.Context, storage certmagic.Storage, s queue.Snapshot, domain bool, comment string) (lists.Entry, error) {
	if s.From == "" {
		return lists.Entry{}, fmt.Errorf("message %s has the null sender: %w", s.ID, ErrCannotAllow)
	}
	e := lists.Entry{Kind: lists.KindSender, Value: s.From, Comment: comment}
	if domain {
		e.Kind, e.Value = lists.KindSenderDomain, queue.Domain(s.From)
	}
	if _, err := lists.Normalize(e); err != nil {
		return lists.Entry{}, fmt.Errorf("message %s: %w: %w", s.ID, ErrCannotAllow, err)
	}
	return lists.AddEntry(ctx, storage, lists.Allow, e)
}
