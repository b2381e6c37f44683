// Package spf is the `smtp.checks.spf` check: the sender's SPF policy
// (RFC 7208) for the client address, evaluated once per transaction, with
// what each result does set per result.
package spf

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/checkopt"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/internal/ttlcache"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(SPF{})
}

// SPF checks the MAIL FROM domain (the HELO name for the null sender)
// against the client's address and acts on the result:
//
//	result    | default  | choices
//	fail      | reject   | reject (550 5.7.23), accept
//	softfail  | accept   | accept, reject
//	temperror | tempfail | tempfail (451 4.4.3), accept
//	permerror | accept   | accept, reject (550 5.7.24)
//
// pass, neutral and none are accepted. The result is logged on refusals
// and counted per verdict, and goes into the message's
// Authentication-Results header (spf=... smtp.mailfrom=...), where the
// dmarc check finds it.
type SPF struct {
	// Fail is what an SPF fail does: `reject` or `accept`. Default: reject.
	Fail string `json:"fail,omitempty"`
	// SoftFail is what a softfail does: `accept` or `reject`. Default:
	// accept.
	SoftFail string `json:"softfail,omitempty"`
	// TempError is what a DNS failure does: `tempfail` or `accept`.
	// Default: tempfail.
	TempError string `json:"temperror,omitempty"`
	// PermError is what a broken SPF record does: `accept` or `reject`.
	// Default: accept.
	PermError string `json:"permerror,omitempty"`

	// Resolvers are the DNS servers to ask ("ip" or "ip:port"); the first
	// that answers is used. Default: the system's.
	Resolvers []string `json:"resolvers,omitempty"`

	// Timeout bounds one evaluation. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	logger   *zap.Logger
	resolver *net.Resolver
	recent   *ttlcache.Cache[key, result] // this minute's results, so that a transaction is evaluated once
}

type key struct{ ip, helo, sender string }

type result struct {
	res spf.Result
	err error
}

const (
	actionReject   = "reject"
	actionAccept   = "accept"
	actionTempfail = "tempfail"

	defaultTimeout = 10 * time.Second
	// recentTTL and recentMax bound the per-transaction memo.
	recentTTL = time.Minute
	recentMax = 10_000
)

var (
	errFail      = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 23}, Message: "SPF validation failed"}
	errPermError = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 24}, Message: "SPF record of the sender domain is invalid"}
	errTempError = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 3}, Message: "SPF lookup failed temporarily, try again later"}
)

// CaddyModule returns the Caddy module information.
func (SPF) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.spf",
		New: func() caddy.Module { return new(SPF) },
	}
}

// Provision checks the actions and sets up the resolver.
func (s *SPF) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	if err := checkopt.Actions("spf",
		checkopt.Action{Field: &s.Fail, Name: "fail", Default: actionReject, Allowed: []string{actionReject, actionAccept}},
		checkopt.Action{Field: &s.SoftFail, Name: "softfail", Default: actionAccept, Allowed: []string{actionAccept, actionReject}},
		checkopt.Action{Field: &s.TempError, Name: "temperror", Default: actionTempfail, Allowed: []string{actionTempfail, actionAccept}},
		checkopt.Action{Field: &s.PermError, Name: "permerror", Default: actionAccept, Allowed: []string{actionAccept, actionReject}},
	); err != nil {
		return err
	}
	if s.Timeout == 0 {
		s.Timeout = caddy.Duration(defaultTimeout)
	}
	if s.Timeout < 0 {
		return fmt.Errorf("spf: timeout must not be negative")
	}
	r, err := dnsResolver(s.Resolvers)
	if err != nil {
		return err
	}
	s.resolver = r
	s.recent = ttlcache.New[key, result](recentMax)
	return nil
}

// dnsResolver is a Go resolver that asks the given servers, in order.
func dnsResolver(servers []string) (*net.Resolver, error) {
	if len(servers) == 0 {
		return net.DefaultResolver, nil
	}
	addrs := make([]string, len(servers))
	for i, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(strings.Trim(s, "[]"), "53")
		}
		host, _, _ := net.SplitHostPort(s)
		if net.ParseIP(host) == nil {
			return nil, fmt.Errorf("spf: resolver %q: want an IP address with an optional port", servers[i])
		}
		addrs[i] = s
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		var errs []string
		for _, a := range addrs {
			c, err := d.DialContext(ctx, network, a)
			if err == nil {
				return c, nil
			}
			errs = append(errs, err.Error())
		}
		return nil, fmt.Errorf("no resolver answered: %s", strings.Join(errs, "; "))
	}}, nil
}

// CheckRecipient implements smtpapp.RecipientCheck.
func (s *SPF) CheckRecipient(ctx context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	if in.Trusted {
		return smtpapp.Accept() // authenticated or relay_networks: not judged
	}
	if in.ClientIP == nil {
		return smtpapp.Accept()
	}
	res, err := s.evaluate(ctx, in)
	ar := &authres.SPFResult{Value: authres.ResultValue(res), From: in.Sender}
	if in.Sender == "" {
		ar.From, ar.Helo = "", in.Helo
	}
	in.Tx.SetAuthResult("spf", ar)
	action := actionAccept
	var reply *smtp.SMTPError
	switch res {
	case spf.Fail:
		action, reply = s.Fail, errFail
	case spf.SoftFail:
		action, reply = s.SoftFail, errFail
	case spf.TempError:
		action, reply = s.TempError, errTempError
	case spf.PermError:
		action, reply = s.PermError, errPermError
	}
	reason := "spf=" + string(res)
	if err != nil {
		reason += " (" + err.Error() + ")"
	}
	switch action {
	case actionReject:
		return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: reply, Reason: reason, Note: string(res)}
	case actionTempfail:
		return smtpapp.Verdict{Result: smtpapp.VerdictTempfail, Reply: reply, Reason: reason, Note: string(res)}
	}
	return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: string(res)}
}

// evaluate runs check_host() once per client, HELO and sender within
// recentTTL (one transaction asks for each recipient).
func (s *SPF) evaluate(ctx context.Context, in *smtpapp.CheckInput) (spf.Result, error) {
	k := key{in.ClientIP.String(), strings.ToLower(in.Helo), strings.ToLower(in.Sender)}
	now := time.Now()
	if r, ok := s.recent.Get(k, now); ok {
		return r.res, r.err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(s.Timeout))
	defer cancel()
	sender := in.Sender
	if sender == "" {
		sender = "postmaster@" + in.Helo // RFC 7208 section 2.4
	}
	res, err := spf.CheckHostWithSender(in.ClientIP, in.Helo, sender, spf.WithContext(ctx), spf.WithResolver(s.resolver))
	s.recent.Put(k, result{res, err}, now, recentTTL)
	return res, err
}

// Concurrent implements smtpapp.ConcurrentCheck: the check only asks DNS.
func (*SPF) Concurrent() {}

// Interface guards
var (
	_ smtpapp.ConcurrentCheck = (*SPF)(nil)
	_ caddy.Provisioner       = (*SPF)(nil)
	_ smtpapp.RecipientCheck  = (*SPF)(nil)
)
