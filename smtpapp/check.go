package smtpapp

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Checks are the gateway's judgement: modules of the `smtp.checks`
// namespace that decide, before the 250, what to let in. A route's checks
// judge each recipient the route takes, at RCPT time, in order; the first
// that does not accept decides. A route's delivery target may judge its
// recipients too (RecipientCheck on the target, as the maildir target does
// for mailboxes that do not exist): it runs after the route's checks.

// RecipientCheck is implemented by checks (and targets) that judge one
// recipient at RCPT time, such as recipient verification.
type RecipientCheck interface {
	// CheckRecipient judges the recipient in.Recipient. It must return
	// promptly (ctx carries the deadline) and be safe for concurrent use.
	CheckRecipient(ctx context.Context, in *CheckInput) Verdict
}

// ConcurrentCheck is implemented by recipient checks that only look
// things up (in DNS) and change nothing: the session starts those of a
// list at the same time, and still applies their verdicts in the list's
// order, so that a transaction waits for the slowest lookup, not for
// their sum.
type ConcurrentCheck interface {
	RecipientCheck
	// Concurrent marks the check; it does nothing.
	Concurrent()
}

// RecipientProber is implemented by delivery targets that can ask their
// next hop whether it takes a recipient (an SMTP callout: EHLO, MAIL
// FROM:<>, RCPT, RSET, QUIT, under the target's TLS policy), such as the
// relay target.
type RecipientProber interface {
	// ProbeRecipient returns nil if the next hop takes rcpt, else a
	// *queue.DeliveryError: permanent for a 5xx reply to RCPT, temporary
	// for a 4xx reply and when the next hop cannot be asked.
	ProbeRecipient(ctx context.Context, rcpt string) error
}

// RouteTargetUser is implemented by checks that work with the delivery
// target of their route (a callout asks it about recipients). UseRouteTarget
// is called once the route's target is provisioned; an error fails the
// config.
type RouteTargetUser interface {
	UseRouteTarget(t queue.Target) error
}

// MessageCheck is implemented by checks that judge the message itself, at
// the end of DATA (or of the last BDAT chunk), such as DKIM verification.
type MessageCheck interface {
	// StartMessage is called when the message data begins. The judge it
	// returns is fed the message as it streams in.
	StartMessage(in *MessageInput) MessageJudge
}

// MessageJudge judges one message for a MessageCheck.
type MessageJudge interface {
	// Write is given the message as the client sent it (header section
	// and body, CRLF line endings, dot-stuffing undone), in pieces, as it
	// arrives. It must not keep p and should not block for long: the
	// client's transfer waits for it. Its errors are ignored.
	Write(p []byte) (int, error)
	// Finish is called once the whole message was written, and decides.
	// ctx carries the deadline.
	Finish(ctx context.Context) Verdict
	// Abort is called instead of Finish when the transfer failed; it
	// releases what the judge holds.
	Abort()
}

// TrustedClientCheck is implemented by message checks that work on the
// mail of trusted clients (authenticated, relay_networks), which the
// server's other checks skip: a DKIM signer. Such a check runs for every
// client and decides itself (MessageInput.Trusted).
type TrustedClientCheck interface {
	MessageCheck
	// ForTrustedClients marks the check; it does nothing.
	ForTrustedClients()
}

// MessageInput is what a message check sees: the envelope, the client
// and the transaction's shared state.
type MessageInput struct {
	// Sender is the envelope sender ("" for the null sender).
	Sender string
	// Recipients are the accepted recipients.
	Recipients []string
	// ClientIP is the address of the client; Helo its EHLO name; AuthUser
	// its SMTP AUTH username ("" when not authenticated).
	ClientIP net.IP
	Helo     string
	AuthUser string
	// Server is the name of the server that receives the message.
	Server string
	// QueueID is the ID the message will have in the queue (the one of
	// the 250 reply and the logs).
	QueueID string
	// TLSVersion ("TLSv1.3") and TLSCipher are the client's TLS session;
	// empty for plaintext.
	TLSVersion, TLSCipher string
	// Trusted is set for clients that authenticated or are in the
	// server's relay_networks.
	Trusted bool
	// Tx is the transaction's shared state (authentication results of
	// earlier checks, such as SPF's).
	Tx *Transaction
}

// CheckOrder is implemented by checks that use the results of other
// checks (DMARC uses DKIM's): a config where one of those comes after it
// in the same list of checks is refused.
type CheckOrder interface {
	// RunsAfter names the checks (module names, such as "dkim") that must
	// not follow it in its list.
	RunsAfter() []string
}

// CheckInput is what a check sees of a transaction: the envelope so far
// and the client.
type CheckInput = MatchInput

// Transaction is the state the checks of one mail transaction share: the
// authentication results that the Authentication-Results header (RFC
// 8601) reports and that DMARC evaluates, and a summary per check for the
// log and the admin API. It is safe for concurrent use.
type Transaction struct {
	mu      sync.Mutex
	results []keyedResult
	checks  []queue.CheckResult
	allowed bool // the server's checks allowed the transaction
	values  map[any]any
}

// Value returns what a check stored under key in this transaction (nil
// if nothing).
func (t *Transaction) Value(key any) any {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.values[key]
}

// SetValue stores v under key for the rest of the transaction, for checks
// that work across stages (a milter session from the first RCPT to the end
// of DATA). A value that is an io.Closer is closed when the transaction
// ends (after DATA, at RSET, or when the connection closes). Use a key
// type of the check's own.
func (t *Transaction) SetValue(key, v any) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.values == nil {
		t.values = make(map[any]any)
	}
	t.values[key] = v
}

// end closes the values that are io.Closers.
func (t *Transaction) end() {
	if t == nil {
		return
	}
	t.mu.Lock()
	values := t.values
	t.values = nil
	t.mu.Unlock()
	for _, v := range values {
		if c, ok := v.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

type keyedResult struct {
	key string
	res authres.Result
}

// SetAuthResult records an authentication result for the
// Authentication-Results header under key (a method and what it
// verified, such as "spf" or "dkim:example.com:sel"), replacing one
// recorded before under the same key.
func (t *Transaction) SetAuthResult(key string, r authres.Result) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.results {
		if t.results[i].key == key {
			t.results[i].res = r
			return
		}
	}
	t.results = append(t.results, keyedResult{key, r})
}

// AuthResults returns the results recorded so far: by method in the
// order iprev, auth, spf, dkim, dmarc, then others (checks that run at
// the same time record theirs in any order), and in the order recorded
// within a method.
func (t *Transaction) AuthResults() []authres.Result {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	sorted := slices.Clone(t.results)
	t.mu.Unlock()
	rank := func(key string) int {
		method, _, _ := strings.Cut(key, ":")
		if i := slices.Index([]string{"iprev", "auth", "spf", "dkim", "dmarc"}, method); i >= 0 {
			return i
		}
		return 5
	}
	slices.SortStableFunc(sorted, func(a, b keyedResult) int { return rank(a.key) - rank(b.key) })
	out := make([]authres.Result, len(sorted))
	for i, r := range sorted {
		out[i] = r.res
	}
	return out
}

// noteCheck records a check's result for the message's log line and
// envelope: once per check name (a later, less favourable result of the
// same check for another recipient replaces an accept).
func (t *Transaction) noteCheck(name string, v Verdict) {
	if t == nil {
		return
	}
	note := v.Note
	if note == "" {
		note = v.Result
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.checks {
		if t.checks[i].Check == name {
			if t.checks[i].Verdict == VerdictAccept && v.Result != VerdictAccept {
				t.checks[i] = queue.CheckResult{Check: name, Verdict: v.Result, Result: note}
			}
			return
		}
	}
	t.checks = append(t.checks, queue.CheckResult{Check: name, Verdict: v.Result, Result: note})
}

// allow marks the transaction allowed by the server's checks: message
// checks of the server then do not refuse or quarantine it.
func (t *Transaction) allow() {
	t.mu.Lock()
	t.allowed = true
	t.mu.Unlock()
}

func (t *Transaction) isAllowed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.allowed
}

// checkResults returns a copy of the summaries.
func (t *Transaction) checkResults() []queue.CheckResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.checks)
}

// The results of a check.
const (
	// VerdictAccept: no objection; the next check runs.
	VerdictAccept = "accept"
	// VerdictReject: refused with a 5xx reply.
	VerdictReject = "reject"
	// VerdictTempfail: refused with a 4xx reply; the client tries later.
	VerdictTempfail = "tempfail"
	// VerdictQuarantine: accepted, and kept in the spool, held, instead of
	// being delivered (an administrator releases or deletes it). Only
	// message checks quarantine; for a recipient check it is an accept.
	VerdictQuarantine = "quarantine"
	// VerdictAllow: accepted, and the remaining checks of the same list
	// (the server's, or the route's) are skipped, as an allow list does.
	// The route's own checks (recipient verification) and its target's
	// still run after the server's list.
	VerdictAllow = "allow"
)

// Verdict is what a check decided.
type Verdict struct {
	// Result is VerdictAccept, VerdictAllow, VerdictReject or
	// VerdictTempfail.
	Result string
	// Reply is the reply for a reject or tempfail. Default: 550 5.7.1 or
	// 451 4.7.1 with a generic text. It is sent to the client: it must not
	// reveal what the check learnt from a backend.
	Reply *smtp.SMTPError
	// Reason says why, for the log (never sent to the client).
	Reason string
	// Note is a short summary of the result for the message's log line
	// and envelope, such as "pass" or "listed in zen.example (5)".
	// Default: Result.
	Note string
	// Headers are header fields to add to the message when it is
	// accepted or quarantined (tags such as X-Spam-Flag), from message
	// checks only. The Authentication-Results header comes from
	// Transaction.SetAuthResult, not from here.
	Headers []HeaderField
	// RemoveHeaders names header fields (any case) to take out of the
	// message when it is accepted or quarantined, every occurrence: with
	// Headers, a check replaces a field (a rewritten Subject). Fields the
	// check itself adds in Headers stay. Message checks only.
	RemoveHeaders []string
	// Body, when not nil, replaces the message's body (everything after
	// the header section, CRLF line ends) when it is accepted or
	// quarantined: a milter's replace-body. Message checks only; the first
	// check's replacement wins (later checks judged the original), and a
	// result larger than the server's max_message_size is a local failure
	// (451 4.3.0).
	Body []byte
}

// HeaderField is a header field a check adds to a message. Value is
// unfolded text; it is sanitised of line breaks before use, unless Folded
// is set: then Value is a folded field value (line breaks as CRLF, each
// followed by a space or tab, as a DKIM signer makes it), used as it is
// if it is well formed and dropped otherwise.
type HeaderField struct {
	Name, Value string
	Folded      bool
}

// Accept is the verdict of a check with no objection.
func Accept() Verdict { return Verdict{Result: VerdictAccept} }

var (
	errCheckRejected = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Rejected by policy"}
	errCheckTempfail = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Temporarily rejected by policy, try again later"}
)

// namedCheck is a check with the name it has in the config, for logs and
// metrics; rcpt or msg (or both) is set.
type namedCheck struct {
	name string
	rcpt RecipientCheck
	msg  MessageCheck
}

// provisionChecks loads a route's checks.
func (r *Route) provisionChecks(ctx caddy.Context) error {
	if r.Checks == nil {
		return nil
	}
	mods, err := ctx.LoadModule(r, "Checks")
	if err != nil {
		return fmt.Errorf("loading checks: %w", err)
	}
	r.checks, err = recipientChecks(mods.([]any), r.target)
	return err
}

// recipientChecks names the loaded check modules and gives those that
// want it the route's target (nil for a server's checks).
func recipientChecks(mods []any, target queue.Target) ([]namedCheck, error) {
	var checks []namedCheck
	for i, mod := range mods {
		rc, _ := mod.(RecipientCheck)
		mc, _ := mod.(MessageCheck)
		if rc == nil && mc == nil {
			return nil, fmt.Errorf("check %d: module %T judges neither recipients nor messages", i, mod)
		}
		name := "check"
		if m, ok := mod.(caddy.Module); ok {
			name = m.CaddyModule().ID.Name()
		}
		if u, ok := mod.(RouteTargetUser); ok {
			if target == nil {
				return nil, fmt.Errorf("check %s: works with a route's delivery target: put it in a route", name)
			}
			if err := u.UseRouteTarget(target); err != nil {
				return nil, fmt.Errorf("check %s: %w", name, err)
			}
		}
		checks = append(checks, namedCheck{name: name, rcpt: rc, msg: mc})
	}
	for i, mod := range mods {
		o, ok := mod.(CheckOrder)
		if !ok {
			continue
		}
		for _, later := range checks[i+1:] {
			if slices.Contains(o.RunsAfter(), later.name) {
				return nil, fmt.Errorf("check %s must come after check %s: it uses its results", checks[i].name, later.name)
			}
		}
	}
	return checks, nil
}

// checkRecipient runs the route's recipient checks, then its target's,
// and returns the refusal of the first that does not accept, or nil. A
// rejection counts against the connection as a rejected command (which
// bounds guessing of addresses).
func (s *session) checkRecipient(r *Route, in *CheckInput) error {
	var lists [][]namedCheck
	if s.identity == nil && !s.srv.relayNetworks.contains(s.ip) {
		lists = append(lists, s.srv.checks)
	}
	if r != nil {
		lists = append(lists, r.checks)
		if tc, ok := r.target.(RecipientCheck); ok {
			lists = append(lists, []namedCheck{{name: "target", rcpt: tc}})
		}
	}
	for i, checks := range lists {
		allowed, err := s.runRecipientChecks(checks, in)
		if err != nil {
			return err
		}
		if allowed && i == 0 && s.identity == nil && !s.srv.relayNetworks.contains(s.ip) {
			s.tx.allow()
		}
	}
	return nil
}

// runRecipientChecks runs one list of checks: up to the first that does
// not accept (an allow ends the list with no refusal, and allowed is true).
func (s *session) runRecipientChecks(checks []namedCheck, in *CheckInput) (allowed bool, err error) {
	ask := func(c RecipientCheck) Verdict {
		ctx, cancel := context.WithTimeout(s.srv.app.ctx, checkTimeout)
		defer cancel()
		return c.CheckRecipient(ctx, in)
	}
	started := make([]chan Verdict, len(checks))
	for i, c := range checks {
		if cc, ok := c.rcpt.(ConcurrentCheck); ok && len(checks) > 1 {
			started[i] = make(chan Verdict, 1)
			go func() { started[i] <- ask(cc) }()
		}
	}
	for i, c := range checks {
		if c.rcpt == nil {
			continue
		}
		var v Verdict
		if started[i] != nil {
			v = <-started[i]
		} else {
			v = ask(c.rcpt)
		}
		if v.Result == "" || v.Result == VerdictQuarantine {
			v.Result = VerdictAccept
		}
		s.srv.app.metrics.checkResults.WithLabelValues(c.name, v.Result).Inc()
		if c.name != "target" {
			s.tx.noteCheck(c.name, v)
		}
		switch v.Result {
		case VerdictAccept:
			continue
		case VerdictAllow:
			s.logger.Debug("recipient allowed by a check", zap.String("check", c.name), zap.String("rcpt", in.Recipient),
				zap.String("reason", v.Reason))
			return true, nil
		case VerdictTempfail:
			reply := v.Reply
			if reply == nil {
				reply = errCheckTempfail
			}
			s.logger.Warn("recipient deferred by a check", zap.String("check", c.name), zap.String("rcpt", in.Recipient),
				zap.String("from", in.Sender), zap.Int("code", reply.Code), zap.String("reason", v.Reason))
			return false, s.refuse(reply)
		default: // reject, and anything unknown
			reply := v.Reply
			if reply == nil {
				reply = errCheckRejected
			}
			return false, s.reject(reply, zap.String("check", c.name), zap.String("rcpt", in.Recipient),
				zap.String("from", in.Sender), zap.String("check_reason", v.Reason))
		}
	}
	return false, nil
}

// checkTimeout bounds one check of one recipient.
const checkTimeout = 30 * time.Second
