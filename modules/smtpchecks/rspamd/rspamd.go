// Package rspamd is the `smtp.checks.rspamd` check: each message is
// streamed, as it arrives, to an rspamd normal worker (`POST /checkv2`),
// and rspamd's action decides: refused, deferred, tagged with X-Spam
// header fields, its Subject rewritten, quarantined, or accepted.
package rspamd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(Rspamd{})
}

// Rspamd asks an rspamd server about every message at the end of DATA.
// The message goes to rspamd while the client sends it, with the envelope
// in request headers (IP, Helo, From, one Rcpt per recipient, User for an
// authenticated client). rspamd's actions are applied as follows:
//
// | rspamd action     | verdict |
// |-------------------|---------|
// | `reject`          | refused: 550 5.7.1 |
// | `soft reject`     | deferred: 451 4.7.1 |
// | `greylist`        | deferred: 451 4.7.1 (or accepted, see `greylist`) |
// | `rewrite subject` | accepted, Subject replaced by rspamd's (or prefixed with "***SPAM***") |
// | `add header`      | accepted with X-Spam: Yes (or quarantined, see `add_header`) |
// | `no action`       | accepted |
//
// Every accepted message carries X-Spam-Score and X-Spam-Status; such
// fields that the message brought along are removed first. A score of at
// least `quarantine_at` quarantines a message that rspamd does not refuse
// or defer. Header changes that rspamd asks for (the milter block of its
// reply) are applied too. Score and strongest symbols go into the log
// line and the message's check results.
type Rspamd struct {
	// URL is the address of rspamd's normal worker: "http://host:port"
	// (https works too). Default: http://127.0.0.1:11333.
	URL string `json:"url,omitempty"`

	// Timeout bounds the wait for rspamd's answer after the end of the
	// message, and connecting to it. Default: 20s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// FailOpen accepts messages when rspamd cannot be asked (down, too
	// slow, an error reply); off defers them with 451 4.7.1 instead.
	// Default: on.
	FailOpen *bool `json:"fail_open,omitempty"`

	// Password is sent in the Password request header, for an rspamd
	// behind a proxy that wants one. Placeholders such as {env.RSPAMD_PW}
	// and {file.path} are replaced. Default: none.
	Password string `json:"password,omitempty"`

	// QuarantineAt quarantines a message whose score is at least this,
	// unless rspamd refuses or defers it. Default: none (no quarantine by
	// score).
	QuarantineAt *float64 `json:"quarantine_at,omitempty"`

	// AddHeader is what rspamd's "add header" action does: "tag" (X-Spam:
	// Yes) or "quarantine" (tagged and quarantined). Default: tag.
	AddHeader string `json:"add_header,omitempty"`

	// Greylist is what rspamd's "greylist" action does: "tempfail" (451
	// 4.7.1, the client retries) or "accept". Default: tempfail.
	Greylist string `json:"greylist,omitempty"`

	endpoint string
	password string
	client   *http.Client
	logger   *zap.Logger
}

const (
	defaultURL     = "http://127.0.0.1:11333"
	defaultTimeout = 20 * time.Second
	// pipeLimit is how much of a message waits for rspamd to read it
	// before the client's transfer waits too.
	pipeLimit = 1 << 20
	// replyLimit bounds rspamd's JSON reply.
	replyLimit = 4 << 20

	actionTag        = "tag"
	actionQuarantine = "quarantine"
	actionTempfail   = "tempfail"
	actionAccept     = "accept"
)

// The replies to clients: nothing of what rspamd found.
var (
	replyReject   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected as spam"}
	replySoft     = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Message deferred, try again later"}
	replyGreylist = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try again later"}
	replyFailed   = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Message could not be scanned, try again later"}
)

// CaddyModule returns the Caddy module information.
func (Rspamd) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.rspamd",
		New: func() caddy.Module { return new(Rspamd) },
	}
}

// Provision checks the settings and sets up the HTTP client.
func (r *Rspamd) Provision(ctx caddy.Context) error {
	r.logger = ctx.Logger()
	if r.URL == "" {
		r.URL = defaultURL
	}
	if err := checkURL(r.URL); err != nil {
		return fmt.Errorf("rspamd: %w", err)
	}
	r.endpoint = strings.TrimSuffix(r.URL, "/") + "/checkv2"
	if r.Timeout < 0 {
		return fmt.Errorf("rspamd: timeout must not be negative")
	}
	if r.Timeout == 0 {
		r.Timeout = caddy.Duration(defaultTimeout)
	}
	for _, o := range []struct {
		name  string
		field *string
		words []string // the first is the default
	}{
		{"add_header", &r.AddHeader, []string{actionTag, actionQuarantine}},
		{"greylist", &r.Greylist, []string{actionTempfail, actionAccept}},
	} {
		if *o.field == "" {
			*o.field = o.words[0]
		} else if !slices.Contains(o.words, *o.field) {
			return fmt.Errorf("rspamd: %s '%s': want %s", o.name, *o.field, strings.Join(o.words, " or "))
		}
	}
	var err error
	if r.password, err = caddy.NewReplacer().ReplaceOrErr(r.Password, true, true); err != nil {
		return fmt.Errorf("rspamd: password: %w", err)
	}
	dialer := &net.Dialer{Timeout: time.Duration(r.Timeout)}
	r.client = &http.Client{Transport: &http.Transport{
		Proxy:               nil, // rspamd is ours: never through an HTTP proxy of the environment
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     time.Minute,
	}}
	return nil
}

// checkURL accepts the address of a worker, without a path.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("url '%s': want http://host:port", s)
	}
	return nil
}

// Cleanup closes idle connections to rspamd.
func (r *Rspamd) Cleanup() error {
	if r.client != nil {
		r.client.CloseIdleConnections()
	}
	return nil
}

// StartMessage implements smtpapp.MessageCheck: the request to rspamd
// starts now, its body fed by the judge's Write.
func (r *Rspamd) StartMessage(in *smtpapp.MessageInput) smtpapp.MessageJudge {
	ctx, cancel := context.WithCancel(context.Background())
	j := &judge{r: r, cancel: cancel, done: make(chan struct{})}
	j.body = newPipe(pipeLimit, time.Duration(r.Timeout), func() {
		j.stalled.Store(true)
		cancel()
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.endpoint, j.body)
	if err != nil {
		j.err = err
		j.body.stopReading()
		close(j.done)
		return j
	}
	r.setHeaders(req.Header, in)
	go func() {
		defer close(j.done)
		j.reply, j.err = r.do(req)
		j.body.stopReading() // rspamd has answered: the rest is not needed
	}()
	return j
}

// setHeaders puts the envelope into the request headers rspamd reads.
func (r *Rspamd) setHeaders(h http.Header, in *smtpapp.MessageInput) {
	if in.ClientIP != nil {
		h.Set("IP", in.ClientIP.String())
	}
	if in.Helo != "" {
		h.Set("Helo", in.Helo)
	}
	if in.Sender != "" {
		h.Set("From", in.Sender)
	}
	for _, rcpt := range in.Recipients {
		h.Add("Rcpt", rcpt)
	}
	if in.AuthUser != "" {
		h.Set("User", in.AuthUser)
	}
	if in.Server != "" {
		h.Set("MTA-Name", in.Server)
	}
	if in.QueueID != "" {
		h.Set("Queue-Id", in.QueueID)
	}
	if in.TLSVersion != "" {
		h.Set("TLS-Version", in.TLSVersion)
		h.Set("TLS-Cipher", in.TLSCipher)
	}
	if r.password != "" {
		h.Set("Password", r.password)
	}
}

// do sends the request and decodes rspamd's reply.
func (r *Rspamd) do(req *http.Request) (*reply, error) {
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("rspamd answered HTTP %d", resp.StatusCode)
	}
	var rep reply
	if err := json.NewDecoder(io.LimitReader(resp.Body, replyLimit)).Decode(&rep); err != nil {
		return nil, fmt.Errorf("decoding rspamd's reply: %w", err)
	}
	if rep.Action == "" {
		return nil, errors.New("rspamd's reply has no action")
	}
	return &rep, nil
}

// judge is one message on its way to rspamd.
type judge struct {
	r       *Rspamd
	cancel  context.CancelFunc
	body    *pipe
	head    headerGrabber
	done    chan struct{}
	stalled atomic.Bool // rspamd stopped reading the message
	reply   *reply
	err     error
}

func (j *judge) Write(p []byte) (int, error) {
	j.head.write(p)
	return j.body.Write(p)
}

func (j *judge) Abort() {
	j.cancel()
	j.body.stopReading()
	j.body.closeWrite()
}

// Finish waits for rspamd's answer, at most Timeout, and maps it to a
// verdict.
func (j *judge) Finish(ctx context.Context) smtpapp.Verdict {
	j.body.closeWrite()
	ctx, stop := context.WithTimeout(ctx, time.Duration(j.r.Timeout))
	defer stop()
	select {
	case <-j.done:
	case <-ctx.Done():
		j.Abort()
		<-j.done
		return j.r.failed(fmt.Errorf("no answer within %s", time.Duration(j.r.Timeout)))
	}
	j.cancel()
	if j.stalled.Load() {
		return j.r.failed(fmt.Errorf("rspamd stopped reading the message for %s", time.Duration(j.r.Timeout)))
	}
	if j.err != nil {
		return j.r.failed(j.err)
	}
	return j.r.verdict(j.reply, j.head.subject())
}

// failed is the verdict when rspamd could not be asked.
func (r *Rspamd) failed(err error) smtpapp.Verdict {
	r.logger.Warn("rspamd could not scan a message", zap.String("url", r.URL), zap.Error(err),
		zap.Bool("fail_open", r.FailOpen == nil || *r.FailOpen))
	if r.FailOpen == nil || *r.FailOpen {
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "unavailable, accepted", Reason: err.Error(),
			RemoveHeaders: spamFields}
	}
	return smtpapp.Verdict{Result: smtpapp.VerdictTempfail, Reply: replyFailed, Note: "unavailable", Reason: err.Error()}
}

// verdict maps rspamd's answer to our verdict; subject is the message's
// own Subject, for the rewrite when rspamd does not give one.
func (r *Rspamd) verdict(rep *reply, subject string) smtpapp.Verdict {
	summary := rep.summary()
	v := smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: summary, Reason: "rspamd: " + rep.summary() + ", symbols: " + rep.symbolList(10)}
	spam := false
	switch rep.Action {
	case "reject":
		v.Result, v.Reply = smtpapp.VerdictReject, replyReject
		return v
	case "soft reject":
		v.Result, v.Reply = smtpapp.VerdictTempfail, replySoft
		return v
	case "greylist":
		if r.Greylist == actionTempfail && !r.quarantines(rep.Score) {
			v.Result, v.Reply = smtpapp.VerdictTempfail, replyGreylist
			return v
		}
	case "rewrite subject":
		spam = true
		s := rep.Subject
		if s == "" {
			s = strings.TrimSpace("***SPAM*** " + subject)
		}
		v.RemoveHeaders = append(v.RemoveHeaders, "Subject")
		v.Headers = append(v.Headers, smtpapp.HeaderField{Name: "Subject", Value: s})
	case "add header":
		spam = true
		if r.AddHeader == actionQuarantine {
			v.Result = smtpapp.VerdictQuarantine
		}
	}
	if r.quarantines(rep.Score) {
		v.Result = smtpapp.VerdictQuarantine
	}
	yes := "No"
	if spam {
		yes = "Yes"
		v.Headers = append(v.Headers, smtpapp.HeaderField{Name: "X-Spam", Value: "Yes"})
	}
	v.Headers = append(v.Headers,
		smtpapp.HeaderField{Name: "X-Spam-Score", Value: fmt.Sprintf("%.2f", rep.Score)},
		smtpapp.HeaderField{Name: "X-Spam-Status", Value: fmt.Sprintf("%s, score=%.2f required=%.2f action=%q tests=[%s]",
			yes, rep.Score, rep.RequiredScore, rep.Action, rep.symbolList(40))})
	v.RemoveHeaders = append(v.RemoveHeaders, spamFields...)
	add, remove := rep.Milter.changes()
	ours := slices.Clone(v.Headers)
	for _, f := range add { // ours win over rspamd's fields of the same name
		if !slices.ContainsFunc(ours, func(h smtpapp.HeaderField) bool { return strings.EqualFold(h.Name, f.Name) }) {
			v.Headers = append(v.Headers, f)
		}
	}
	v.RemoveHeaders = append(v.RemoveHeaders, remove...)
	return v
}

// spamFields are our verdict's fields: those a message brings along are
// forgeries, and removed.
var spamFields = []string{"X-Spam", "X-Spam-Score", "X-Spam-Status"}

func (r *Rspamd) quarantines(score float64) bool {
	return r.QuarantineAt != nil && score >= *r.QuarantineAt
}

// Interface guards
var (
	_ caddy.Provisioner    = (*Rspamd)(nil)
	_ caddy.CleanerUpper   = (*Rspamd)(nil)
	_ smtpapp.MessageCheck = (*Rspamd)(nil)
)
