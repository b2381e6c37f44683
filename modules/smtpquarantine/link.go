package smtpquarantine

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/quarantineview"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

type linkPage struct {
	layout
	Msg    quarantineview.Message
	Rcpt   string
	Action string
	// Label is the button's text; Done is set after the confirming POST.
	Label  string
	Done   bool
	Fields map[string]string
}

// linkLabels are the buttons of the link actions.
var linkLabels = map[string]string{
	linkRelease: "Release this message",
	linkAllow:   "Release this message and always accept mail from its sender",
}

// serveLink serves a digest link: a GET shows the message and a button,
// the button's POST (with the same signed fields) acts. A GET never acts:
// mail scanners fetch the links of the mail they pass.
func (h *Handler) serveLink(w http.ResponseWriter, r *http.Request, p page) error {
	if !h.allow(w, r, p, http.MethodGet, http.MethodHead, http.MethodPost) {
		return nil
	}
	fields := r.URL.Query()
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			return h.fail(w, p, http.StatusBadRequest, "The form could not be read.")
		}
		fields = r.PostForm
	}
	l, err := h.keys.verify(fields, time.Now())
	if err != nil {
		h.logger.Info("digest link refused", zap.String("remote_ip", remoteIP(r)), zap.Error(err))
		msg := "This link is not valid: it was changed, or it does not come from this quarantine's digest."
		if errors.Is(err, errLinkExpired) {
			msg = "This link has expired. Ask your mail administrator, or use the quarantine page."
		}
		return h.fail(w, p, http.StatusForbidden, msg)
	}
	q, err := quarantineview.ActiveQueue()
	if err != nil {
		return h.failQueue(w, p, err)
	}
	s, err := quarantineview.Quarantined(q, l.ID)
	if err == nil && !slices.ContainsFunc(s.Recipients, func(rc queue.RecipientSnapshot) bool { return strings.EqualFold(rc.Addr, l.Rcpt) }) {
		err = queue.ErrNotFound // signed by us, so this cannot happen; refuse anyway
	}
	if err != nil {
		return h.failQueue(w, p, err)
	}
	d := linkPage{layout: layout{Title: "Quarantined message"}, Msg: quarantineview.Describe(q, s), Rcpt: l.Rcpt,
		Action: l.Action, Label: linkLabels[l.Action], Fields: map[string]string{}}
	if r.Method != http.MethodPost {
		for _, k := range []string{paramAction, paramID, paramRcpt, paramExpires, paramSig} {
			d.Fields[k] = fields.Get(k)
		}
		return h.render(w, http.StatusOK, "link", d)
	}
	if err := h.act(r.Context(), q, s, l.Action, "recipient "+l.Rcpt+" (digest link)"); err != nil {
		return h.failQueue(w, p, err)
	}
	h.logger.Info("quarantine action", zap.String("action", l.Action), zap.String("msg_id", s.ID),
		zap.String("rcpt", l.Rcpt), zap.String("via", "digest link"))
	d.Done = true
	return h.render(w, http.StatusOK, "link", d)
}
