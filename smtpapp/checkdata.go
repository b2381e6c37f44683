package smtpapp

import (
	"bytes"
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/headerfilter"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// The DATA stage of the checks: message checks (MessageCheck) of the
// server and of the recipients' routes are fed the message as it streams
// into the spool, and decide after the end of data, before the reply.
// What they found goes into one Authentication-Results header field (RFC
// 8601) that the message carries in front of the stored data
// (queue.Message.Headers).

// judge is a running MessageJudge with its check's name and list.
type judge struct {
	name   string
	server bool // from the server's checks (an allow list overrides it)
	j      MessageJudge
}

// judgeSet feeds every judge of a message; its Write never fails.
type judgeSet []judge

func (js judgeSet) Write(p []byte) (int, error) {
	for _, j := range js {
		_, _ = j.j.Write(p)
	}
	return len(p), nil
}

func (js judgeSet) abort() {
	for _, j := range js {
		j.j.Abort()
	}
}

// startMessageChecks starts the message checks that apply: the server's
// (not for authenticated users and relay_networks clients), then those of
// each route that took a recipient, each route once.
func (s *session) startMessageChecks(msg *queue.Message) judgeSet {
	in := &MessageInput{Sender: s.from, ClientIP: net.ParseIP(s.ip), Helo: s.conn.Hostname(), Server: s.srv.name, QueueID: msg.ID, Tx: s.tx}
	in.TLSVersion, in.TLSCipher = s.tlsNames()
	for _, r := range msg.Recipients {
		in.Recipients = append(in.Recipients, r.Addr)
	}
	if s.identity != nil {
		in.AuthUser = s.identity.Username
	}
	in.Trusted = s.identity != nil || s.srv.relayNetworks.contains(s.ip)
	var js judgeSet
	start := func(checks []namedCheck, server bool) {
		for _, c := range checks {
			if c.msg != nil {
				js = append(js, judge{name: c.name, server: server, j: c.msg.StartMessage(in)})
			}
		}
	}
	if !in.Trusted {
		start(s.srv.checks, true)
	} else {
		for _, c := range s.srv.checks {
			if tc, ok := c.msg.(TrustedClientCheck); ok {
				js = append(js, judge{name: c.name, server: true, j: tc.StartMessage(in)})
			}
		}
	}
	seen := make(map[*Route]bool)
	for _, r := range s.rcptRoutes {
		if r != nil && !seen[r] {
			seen[r] = true
			start(r.checks, false)
		}
	}
	return js
}

// finishMessageChecks asks the judges for their verdicts, in order, and
// applies them to msg: the first reject or tempfail refuses the message
// (the judges after it are aborted); a quarantine holds it; header fields
// and the Authentication-Results header go into msg.Headers.
func (s *session) finishMessageChecks(js judgeSet, msg *queue.Message) (body []byte, err error) {
	var added []HeaderField
	allowed := s.tx.isAllowed()
	for i, j := range js {
		ctx, cancel := context.WithTimeout(s.srv.app.ctx, checkTimeout)
		v := j.j.Finish(ctx)
		cancel()
		if v.Result == "" || v.Result == VerdictAllow {
			v.Result = VerdictAccept
		}
		if allowed && j.server && v.Result != VerdictAccept {
			s.logger.Info("message check overridden by an allow list", zap.String("msg_id", msg.ID),
				zap.String("check", j.name), zap.String("verdict", v.Result), zap.String("reason", v.Reason))
			v.Result, v.Reply = VerdictAccept, nil
		}
		s.srv.app.metrics.checkResults.WithLabelValues(j.name, v.Result).Inc()
		s.tx.noteCheck(j.name, v)
		switch v.Result {
		case VerdictAccept:
		case VerdictQuarantine:
			if msg.Quarantine == nil {
				msg.Held = true
				msg.Quarantine = &queue.Quarantine{Check: j.name, Reason: v.Reason, At: time.Now()}
			}
		default: // tempfail, reject, and anything unknown (a reject)
			js[i+1:].abort()
			reply, what := v.Reply, "message rejected by a check"
			if v.Result == VerdictTempfail {
				what = "message deferred by a check"
				if reply == nil {
					reply = errCheckTempfail
				}
			}
			if reply == nil {
				reply = errCheckRejected
			}
			s.logger.Warn(what, zap.String("msg_id", msg.ID), zap.String("check", j.name),
				zap.String("from", msg.From), zap.Int("code", reply.Code),
				zap.String("enhanced_code", enhanced(reply.EnhancedCode)), zap.String("reason", v.Reason))
			return nil, checkRefusal{reply}
		}
		if v.Body != nil {
			if body == nil {
				body = v.Body
				s.logger.Info("message body replaced by a check", zap.String("msg_id", msg.ID), zap.String("check", j.name), zap.Int("size", len(v.Body)))
			} else {
				s.logger.Warn("a second check's body replacement ignored", zap.String("msg_id", msg.ID), zap.String("check", j.name))
			}
		}
		added = append(added, v.Headers...)
		for _, name := range v.RemoveHeaders {
			if validFieldName(name) && !slices.ContainsFunc(msg.DropHeaders, func(d string) bool { return strings.EqualFold(d, name) }) {
				msg.DropHeaders = append(msg.DropHeaders, name)
			}
		}
	}
	msg.Checks = s.tx.checkResults()
	msg.Headers = headerBlock(s.srv.Hostname, s.tx.AuthResults(), added)
	return body, nil
}

// checkRefusal is a message check's refusal of a message, logged where
// it was decided.
type checkRefusal struct{ reply *smtp.SMTPError }

func (c checkRefusal) Error() string { return c.reply.Error() }
func (c checkRefusal) Unwrap() error { return c.reply }

// headerBlock formats the header fields the checks add: one
// Authentication-Results field (when any check recorded a result), then
// the checks' own fields. Values are unfolded, sanitised of control
// characters, and folded at "; " to keep lines short.
func headerBlock(authservID string, results []authres.Result, fields []HeaderField) string {
	var b strings.Builder
	if len(results) > 0 {
		v := strings.TrimSpace(strings.ReplaceAll(authres.Format(authservID, results), " ; ", "; "))
		b.WriteString("Authentication-Results: ")
		b.WriteString(strings.ReplaceAll(headerText(v), "; ", ";\r\n\t"))
		b.WriteString("\r\n")
	}
	for _, f := range fields {
		if !validFieldName(f.Name) {
			continue
		}
		value := headerText(f.Value)
		if f.Folded {
			if !wellFolded(f.Value) {
				continue
			}
			value = f.Value
		}
		b.WriteString(f.Name)
		b.WriteString(": ")
		b.WriteString(value)
		b.WriteString("\r\n")
	}
	return b.String()
}

// headerText makes s one line of printable text: control characters
// (line breaks among them) become spaces; at most 900 octets.
func headerText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 900 {
		s = s[:900]
	}
	return s
}

// wellFolded reports whether v is a folded header field value: printable
// text and white space, every CRLF followed by a space or a tab and some
// text, no other CR or LF, at most 998 octets a line.
func wellFolded(v string) bool {
	lines := strings.Split(v, "\r\n")
	for i, l := range lines {
		if len(l) > 998 || i > 0 && (l == "" || l[0] != ' ' && l[0] != '\t' || strings.TrimSpace(l) == "") {
			return false
		}
		for j := 0; j < len(l); j++ {
			if c := l[j]; c < 0x20 && c != '\t' || c == 0x7f {
				return false
			}
		}
	}
	return true
}

// validFieldName reports whether name is a header field name (RFC 5322
// 3.6.8: printable ASCII but ':').
func validFieldName(name string) bool {
	if name == "" || len(name) > 76 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x21 || name[i] > 0x7e || name[i] == ':' {
			return false
		}
	}
	return true
}

// checkResultsField logs the checks' results as one object, a key per
// check: {"spf":"pass","dnsbl":"accept"}.
type checkResultsField []queue.CheckResult

func (c checkResultsField) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for _, r := range c {
		v := r.Result
		if r.Verdict != VerdictAccept && r.Verdict != r.Result {
			v = r.Verdict + ": " + r.Result
		}
		enc.AddString(r.Check, v)
	}
	return nil
}

// newAuthResultsFilter passes the message on to w but for the
// Authentication-Results header fields that claim authserv-id as theirs
// (RFC 8601 section 5: a receiver removes those, which could otherwise be
// forged to look like our own verdicts). It only looks at the header
// section; the body passes as it is.
func newAuthResultsFilter(w io.Writer, ourID string) *headerfilter.Writer {
	id := strings.ToLower(ourID)
	return headerfilter.New(w, func(name string) bool { return strings.EqualFold(name, "Authentication-Results") },
		func(field []byte) bool {
			_, value, _ := bytes.Cut(field, []byte(":"))
			return authservID(string(value)) == id
		})
}

// authservID returns the authserv-id of an Authentication-Results value,
// lowercased: the text before the first ";" without folding white space
// and comments, up to a version number.
func authservID(value string) string {
	v, _, _ := strings.Cut(value, ";")
	v = stripComments(v)
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(fields[0], "."))
}

// stripComments removes (nested) RFC 5322 comments.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}
