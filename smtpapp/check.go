package smtpapp

import (
	"context"
	"fmt"
	"time"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
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

// CheckInput is what a check sees of a transaction: the envelope so far
// and the client.
type CheckInput = MatchInput

// The results of a check.
const (
	// VerdictAccept: no objection; the next check runs.
	VerdictAccept = "accept"
	// VerdictReject: refused with a 5xx reply.
	VerdictReject = "reject"
	// VerdictTempfail: refused with a 4xx reply; the client tries later.
	VerdictTempfail = "tempfail"
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
}

// Accept is the verdict of a check with no objection.
func Accept() Verdict { return Verdict{Result: VerdictAccept} }

var (
	errCheckRejected = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Rejected by policy"}
	errCheckTempfail = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Temporarily rejected by policy, try again later"}
)

// namedCheck is a check with the name it has in the config, for logs and
// metrics.
type namedCheck struct {
	name  string
	check RecipientCheck
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
		c, ok := mod.(RecipientCheck)
		if !ok {
			return nil, fmt.Errorf("check %d: module %T does not judge recipients", i, mod)
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
		checks = append(checks, namedCheck{name, c})
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
			lists = append(lists, []namedCheck{{"target", tc}})
		}
	}
	for _, checks := range lists {
		if err := s.runRecipientChecks(checks, in); err != nil {
			return err
		}
	}
	return nil
}

// runRecipientChecks runs one list of checks: up to the first that does
// not accept (an allow ends the list with no refusal).
func (s *session) runRecipientChecks(checks []namedCheck, in *CheckInput) error {
	for _, c := range checks {
		ctx, cancel := context.WithTimeout(s.srv.app.ctx, checkTimeout)
		v := c.check.CheckRecipient(ctx, in)
		cancel()
		if v.Result == "" {
			v.Result = VerdictAccept
		}
		s.srv.app.metrics.checkResults.WithLabelValues(c.name, v.Result).Inc()
		switch v.Result {
		case VerdictAccept:
			continue
		case VerdictAllow:
			s.logger.Debug("recipient allowed by a check", zap.String("check", c.name), zap.String("rcpt", in.Recipient),
				zap.String("reason", v.Reason))
			return nil
		case VerdictTempfail:
			reply := v.Reply
			if reply == nil {
				reply = errCheckTempfail
			}
			s.logger.Warn("recipient deferred by a check", zap.String("check", c.name), zap.String("rcpt", in.Recipient),
				zap.String("from", in.Sender), zap.Int("code", reply.Code), zap.String("reason", v.Reason))
			return s.refuse(reply)
		default: // reject, and anything unknown
			reply := v.Reply
			if reply == nil {
				reply = errCheckRejected
			}
			return s.reject(reply, zap.String("check", c.name), zap.String("rcpt", in.Recipient),
				zap.String("from", in.Sender), zap.String("check_reason", v.Reason))
		}
	}
	return nil
}

// checkTimeout bounds one check of one recipient.
const checkTimeout = 30 * time.Second
