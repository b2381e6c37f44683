package queue

import (
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/dsn"
)

// notify queues one DSN to the sender of m about the given recipients
// (failed ones, and delivered ones that asked for NOTIFY=SUCCESS). The DSN
// has the null sender, so it never causes a DSN itself.
//
// A DSN about a REQUIRETLS message returns only the original's header
// section and is queued with REQUIRETLS itself (RFC 8689 section 5), so
// targets hand it only to a next hop that meets RFC 8689 section 4.2.1,
// as they would the original. Where the return path offers no such hop the
// DSN fails and, having the null sender, is dropped: it is never sent in
// the clear.
func (q *Queue) notify(m *Message, rcpts []*Recipient, cfg Config) error {
	return q.report(m, rcpts, cfg, false)
}

// notifyDelay queues one delayed DSN (RFC 3464 action=delayed) to the
// sender of m about recipients still pending.
func (q *Queue) notifyDelay(m *Message, rcpts []*Recipient, cfg Config) error {
	return q.report(m, rcpts, cfg, true)
}

// report queues a DSN about rcpts: their failures and successes, or, when
// delayed, that they are still being tried. A DSN about mail from the null
// sender goes to cfg.Postmaster (a double bounce), marked so that its own
// failure is never reported.
func (q *Queue) report(m *Message, rcpts []*Recipient, cfg Config, delayed bool) error {
	to, double := m.From, false
	if to == "" {
		to, double = cfg.Postmaster, true
	}
	if to == "" || double && m.DoubleBounce {
		return nil // nobody to tell (canReport says so first)
	}
	now := time.Now()
	report := &dsn.Report{
		ReportingMTA:    cfg.Hostname,
		EnvelopeID:      m.EnvID,
		ArrivalDate:     m.Arrived,
		ReceivedFromMTA: m.Client.Helo,
		Sender:          to,
		Return:          m.Ret,
		UTF8:            m.SMTPUTF8,
		RequireTLS:      m.RequireTLS,
		Date:            now,
	}
	for _, r := range rcpts {
		rec := dsn.Recipient{
			Final:       r.Addr,
			Original:    r.ORCPT,
			LastAttempt: now,
		}
		switch {
		case delayed && r.Status == Pending:
			rec.Action = dsn.Delayed
			rec.Status = "4.0.0"
			if strings.HasPrefix(r.Enhanced, "4.") {
				rec.Status = r.Enhanced
			}
			if r.LastReply != "" {
				rec.Diagnostic = "smtp; " + r.LastReply
			}
			if cfg.MaxAge > 0 {
				rec.WillRetryUntil = m.Arrived.Add(cfg.MaxAge)
			}
		case delayed:
			continue
		case r.Status == Failed:
			rec.Action = dsn.Failed
			rec.Status = permanentStatus(r.Enhanced)
			if r.LastReply != "" {
				rec.Diagnostic = "smtp; " + r.LastReply
			}
		case r.Status == Delivered:
			rec.Action = dsn.Action(r.Action)
			rec.Status = "2.0.0"
			if r.LastReply != "" {
				rec.Diagnostic = "smtp; " + r.LastReply
			}
		default:
			continue
		}
		if r.RemoteMTA != "" {
			rec.RemoteMTA = "dns; " + r.RemoteMTA
		}
		report.Recipients = append(report.Recipients, rec)
	}
	if len(report.Recipients) == 0 {
		return nil
	}
	body, err := m.OpenBody()
	if err != nil {
		return fmt.Errorf("opening original: %w", err)
	}
	defer body.Close()
	id := NewID()
	w, err := q.store.Create(id)
	if err != nil {
		return err
	}
	info, err := dsn.WriteInfo(w, report, body, cfg.MaxReturnSize)
	if err != nil {
		w.Abort()
		return fmt.Errorf("writing DSN: %w", err)
	}
	bounce := &Message{
		From:         "",
		DoubleBounce: double,
		Recipients:   []*Recipient{{Addr: to, Notify: []string{"NEVER"}}},
		Arrived:      now,
		SMTPUTF8:     info.SMTPUTF8,
		RequireTLS:   info.RequireTLS,
		Client:       ClientInfo{Helo: cfg.Hostname},
		Server:       m.Server,
		MessageID:    info.MessageID, // for the delivery log lines, as an inbound message's
	}
	if info.EightBit {
		bounce.Body = "8BITMIME"
	}
	bounce.Arrived = time.Now() // its own age starts when it is queued
	if err := q.Commit(w, bounce); err != nil {
		return err
	}
	what := "DSN queued"
	switch {
	case double:
		what = "DSN about undeliverable mail from the null sender queued to the postmaster"
	case delayed:
		what = "delay DSN queued"
	}
	q.log().Info(what, zap.String("msg_id", m.ID), zap.String("dsn_id", id), zap.String("to", to),
		zap.Int("rcpts", len(report.Recipients)), zap.Bool("require_tls", bounce.RequireTLS))
	return nil
}

// permanentStatus turns the enhanced code of a failure into the permanent
// class a "failed" DSN reports (an expired 4.4.7 becomes 5.4.7).
func permanentStatus(enhanced string) string {
	if enhanced == "" {
		return "5.0.0"
	}
	if strings.HasPrefix(enhanced, "4.") {
		return "5." + enhanced[2:]
	}
	return enhanced
}
