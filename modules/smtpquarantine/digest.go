package smtpquarantine

// Digests. They are configured in the handler, not in the smtp app: the
// handler serves and verifies the links a digest carries, holds the key
// that signs them, and its site is the digest's base_url, so one block
// says it all and the smtp app needs no hook. The loop runs in every
// provisioned handler with a digest; the state in storage, updated under
// the storage lock, makes one of them send per period, across reloads,
// restarts and gateways that share the storage.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"mime/quotedprintable"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/quarantineview"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Digest configures the digest mails: every period, each recipient with
// mail quarantined since the last digest gets one message, through the
// smtp app's queue and routes, that lists it with signed, expiring links
// to release it or to release it and allow its sender. A link opens a page
// that asks for a confirming click (a GET never acts: mail scanners fetch
// links), then acts. The links are signed with HMAC-SHA256 by a key that
// the handler keeps in Caddy storage; the time of the last digest is kept
// there too, so a reload or restart does not send it again.
type Digest struct {
	// Every is the period between digests. Default: `24h`.
	Every caddy.Duration `json:"every,omitempty"`
	// BaseURL is the public URL of this handler's site, where the links
	// point: `https://quarantine.example.com/`. Required.
	BaseURL string `json:"base_url,omitempty"`
	// From is the sender of the digests (envelope and From field).
	// Default: `postmaster@<the smtp app's hostname>`.
	From string `json:"from,omitempty"`
	// LinkLifetime is how long a digest's links work. Default: `168h` (7
	// days).
	LinkLifetime caddy.Duration `json:"link_lifetime,omitempty"`
	// Domains limits the digests to recipients in these domains (for a
	// gateway that also quarantines outgoing mail, whose recipients should
	// not release it). Default: every recipient.
	Domains []string `json:"domains,omitempty"`

	base *url.URL
}

// Defaults of Digest.
const (
	defaultEvery        = 24 * time.Hour
	defaultLinkLifetime = 7 * 24 * time.Hour
	// digestStartDelay is how long after its provisioning a handler first
	// looks whether a digest is due: a config that is only validated, or
	// replaced right away, sends nothing.
	digestStartDelay = time.Minute
	// digestRetry is the wait after a failed digest.
	digestRetry = 5 * time.Minute
)

// digestState is where the digest state lives in Caddy storage.
const digestState = "smtp/quarantine/digest.json"

// state is the stored digest state.
type state struct {
	// Last is when the last digest was made: it listed what was
	// quarantined until then. Zero before the first.
	Last time.Time `json:"last,omitzero"`
	// Next is when the next one is due.
	Next time.Time `json:"next"`
}

func (d *Digest) provision() error {
	if d.Every == 0 {
		d.Every = caddy.Duration(defaultEvery)
	}
	if d.LinkLifetime == 0 {
		d.LinkLifetime = caddy.Duration(defaultLinkLifetime)
	}
	if d.Every < caddy.Duration(time.Minute) {
		return fmt.Errorf("every %s: want at least 1m", time.Duration(d.Every))
	}
	if d.LinkLifetime < caddy.Duration(time.Hour) {
		return fmt.Errorf("link_lifetime %s: want at least 1h", time.Duration(d.LinkLifetime))
	}
	u, err := url.Parse(d.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("base_url %q: want the absolute http(s) URL of the quarantine site", d.BaseURL)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	d.base = u
	if d.From != "" && (queue.LocalPart(d.From) == "" || queue.Domain(d.From) == "") {
		return fmt.Errorf("from %q: want an address", d.From)
	}
	for i, dom := range d.Domains {
		n, err := queue.NormalizeDomain(dom)
		if err != nil {
			return fmt.Errorf("domains: %w", err)
		}
		d.Domains[i] = n
	}
	return nil
}

// digesters are the handlers whose digest loop runs (for the tests).
var digesters = struct {
	sync.Mutex
	set map[*Handler]bool
}{set: make(map[*Handler]bool)}

func (h *Handler) startDigests() {
	ctx, cancel := context.WithCancel(h.ctx)
	h.cancel = cancel
	digesters.Lock()
	digesters.set[h] = true
	digesters.Unlock()
	h.done = make(chan struct{})
	go h.digestLoop(ctx)
}

func (h *Handler) stopDigests() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
}

// digestLoop sends the digests when they are due until ctx ends (a
// Cleanup, or the end of the config's context when a load fails after
// the handler's Provision).
func (h *Handler) digestLoop(ctx context.Context) {
	defer func() {
		digesters.Lock()
		delete(digesters.set, h)
		digesters.Unlock()
		close(h.done)
	}()
	log := h.logger.Named("digest")
	wait := digestStartDelay
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		next, _, err := h.runDigest(ctx, time.Now())
		if err != nil {
			log.Error("quarantine digest", zap.Error(err))
			wait = digestRetry
			continue
		}
		wait = max(time.Until(next), time.Second)
	}
}

// runDigest sends the digest if it is due at now, and returns when the
// next one is due, and how many digests it queued. The stored state is read and written under the storage
// lock: of several handlers (a reload's old and new config, gateways
// sharing the storage), one sends.
func (h *Handler) runDigest(ctx context.Context, now time.Time) (next time.Time, sent int, err error) {
	st := h.ctx.Storage()
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := st.Lock(lctx, digestState); err != nil {
		return time.Time{}, 0, fmt.Errorf("locking %s: %w", digestState, err)
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(lctx), digestState) }()
	every := time.Duration(h.Digest.Every)
	var s state
	raw, err := st.Load(lctx, digestState)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// The first digest, one period from now, lists all that is
		// quarantined by then.
		s.Next = now.Add(every)
		return s.Next, 0, h.saveState(lctx, s)
	case err != nil:
		return time.Time{}, 0, err
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return time.Time{}, 0, fmt.Errorf("%s: %w", digestState, err)
	}
	if !s.Last.IsZero() && s.Last.Add(every).Before(s.Next) {
		s.Next = s.Last.Add(every) // every was shortened
	}
	if now.Before(s.Next) {
		return s.Next, 0, nil
	}
	sent, err = h.sendDigests(s.Last, now)
	if err != nil {
		return time.Time{}, sent, err
	}
	s = state{Last: now, Next: now.Add(every)}
	return s.Next, sent, h.saveState(lctx, s)
}

func (h *Handler) saveState(ctx context.Context, s state) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return h.ctx.Storage().Store(ctx, digestState, raw)
}

// sendDigests queues a digest to each recipient of the mail quarantined
// after since and until now that is still quarantined, and returns how
// many it queued. When one fails, the others are still queued and the
// error is returned: the period is tried again, and the recipients whose
// digest went out get it twice rather than someone getting none.
func (h *Handler) sendDigests(since, now time.Time) (int, error) {
	app, err := quarantineview.ActiveApp()
	if err != nil {
		return 0, err
	}
	q := app.RunningQueue()
	from := h.Digest.From
	if from == "" {
		from = "postmaster@" + app.Hostname
	}
	byRcpt := make(map[string][]quarantineview.Message)
	for _, s := range q.Quarantined() {
		if !s.Quarantine.At.After(since) || s.Quarantine.At.After(now) {
			continue
		}
		m := quarantineview.Describe(q, s)
		for _, rc := range s.Recipients {
			addr := strings.ToLower(rc.Addr)
			if rc.Status == "pending" && (len(h.Digest.Domains) == 0 || slices.Contains(h.Digest.Domains, queue.Domain(addr))) {
				byRcpt[addr] = append(byRcpt[addr], m)
			}
		}
	}
	log := h.logger.Named("digest")
	var failed error
	sent := 0
	for _, rcpt := range slices.Sorted(maps.Keys(byRcpt)) {
		msgs := byRcpt[rcpt]
		id, err := h.queueDigest(q, app.Hostname, from, rcpt, msgs, now)
		if err != nil {
			log.Error("queueing quarantine digest", zap.String("rcpt", rcpt), zap.Error(err))
			failed = err
			continue
		}
		sent++
		log.Info("quarantine digest queued", zap.String("rcpt", rcpt), zap.String("msg_id", id), zap.Int("messages", len(msgs)))
	}
	return sent, failed
}

// queueDigest writes one digest and commits it to the queue; it is
// delivered by the routes of the server that accepted the first message.
func (h *Handler) queueDigest(q *queue.Queue, hostname, from, rcpt string, msgs []quarantineview.Message, now time.Time) (string, error) {
	expires := now.Add(time.Duration(h.Digest.LinkLifetime))
	var b bytes.Buffer
	subject := fmt.Sprintf("Quarantine: %d new message", len(msgs))
	if len(msgs) != 1 {
		subject += "s"
	}
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n", from, rcpt, subject)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n", time.Now().Format(time.RFC1123Z), queue.NewID(), hostname)
	b.WriteString("Auto-Submitted: auto-generated\r\nX-Auto-Response-Suppress: All\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")

	var text strings.Builder
	fmt.Fprintf(&text, "These messages to %s were held in quarantine because they look like spam or\n", rcpt)
	text.WriteString("malware. They are not delivered unless you release them.\n\n")
	for i, m := range msgs {
		fmt.Fprintf(&text, "%d. From:    %s\n", i+1, oneLine(cmp.Or(m.From, "<> (null sender)")))
		fmt.Fprintf(&text, "   Subject: %s\n", oneLine(m.Subject))
		fmt.Fprintf(&text, "   Date:    %s\n", m.Quarantined.UTC().Format("2006-01-02 15:04 UTC"))
		fmt.Fprintf(&text, "   Reason:  %s\n", oneLine(strings.TrimSuffix(m.Check+": "+m.Reason, ": ")))
		fmt.Fprintf(&text, "   Release: %s\n", h.linkURL(link{ID: m.ID, Rcpt: rcpt, Action: linkRelease, Expires: expires}))
		if m.From != "" {
			fmt.Fprintf(&text, "   Release and allow the sender: %s\n", h.linkURL(link{ID: m.ID, Rcpt: rcpt, Action: linkAllow, Expires: expires}))
		}
		text.WriteString("\n")
	}
	fmt.Fprintf(&text, "The links work until %s. All your quarantined mail: %s\n", expires.UTC().Format("2006-01-02 15:04 UTC"), h.Digest.base)
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write([]byte(strings.ReplaceAll(text.String(), "\n", "\r\n"))); err != nil {
		return "", err
	}
	if err := qp.Close(); err != nil {
		return "", err
	}

	id := queue.NewID()
	w, err := q.Create(id)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		w.Abort()
		return "", err
	}
	return id, q.Commit(w, &queue.Message{
		From:       from,
		Recipients: []*queue.Recipient{{Addr: rcpt, Notify: []string{"NEVER"}}},
		Arrived:    time.Now(),
		Client:     queue.ClientInfo{Helo: hostname},
		Server:     msgs[0].Server,
	})
}

// linkURL is the URL of a signed link.
func (h *Handler) linkURL(l link) string {
	u := *h.Digest.base
	u.Path += "link"
	u.RawQuery = h.keys.sign(l).Encode()
	return u.String()
}

// oneLine makes a header value safe for a line of the digest's text: no
// control characters, at most 200 characters.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}
