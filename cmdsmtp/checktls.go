package cmdsmtp

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/emersion/go-smtp"
	"github.com/spf13/cobra"
	"golang.org/x/net/idna"

	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

func init() {
	subcommands = append(subcommands, checkTLSCommand)
}

// Exit codes of `caddy smtp check-tls`.
const (
	checkOK    = 0 // every MX host would accept delivery under its policy
	checkFail  = 1 // some would not, or the domain has no usable MX
	checkUsage = 2 // bad arguments or flags
)

func checkTLSCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check-tls [--resolver <ip[:port]>] [--level <level>] [--ca <file>] [--json] <domain>",
		Short: "Shows the TLS policy and STARTTLS outcome of each MX host of a domain",
		Long: `
Checks outbound TLS to a recipient domain the way delivery would, like
Postfix's posttls-finger, without sending mail.

It looks up the MX hosts (noting whether the answer was DNSSEC-authenticated),
the MTA-STS record and policy (the policy is fetched from
https://mta-sts.<domain>/ on port 443), the TLS-RPT record, and for each MX
host its TLSA records (_25._tcp.<host>) and addresses. It then picks the
policy that delivery would apply to the host (DANE, else an enforced MTA-STS
policy, else the configured --level) and connects to every address at that
policy: EHLO, STARTTLS, EHLO, QUIT. When that fails, it connects again at
the opportunistic level to show what the host offers.

Every lookup, the address of the MTA-STS policy host included, goes to the
--resolver servers (default: those of /etc/resolv.conf). DANE trusts only
answers with the AD bit, so point --resolver at a validating resolver on a
trusted path. --ca adds roots for checking the MX hosts' certificates (as
the mx target's ca_file); the MTA-STS policy host is checked against the
system roots only, as in delivery.

Exit status: 0 when every address of every MX host would accept delivery
under its policy, 1 otherwise, 2 on usage errors.
`,
		Args: cobra.ArbitraryArgs, // checked in checkTLS, for exit status 2
		RunE: caddycmd.WrapCommandFuncForCobra(cmdCheckTLS),
	}
	f := cmd.Flags()
	f.StringSlice("resolver", nil, "DNS server ip[:port] to ask (repeat or comma-separate; default: /etc/resolv.conf)")
	f.Int("port", 25, "Port of the MX hosts")
	f.String("helo", "", "Name to send in EHLO (default: this host's name)")
	f.String("level", string(tlsupgrade.LevelOpportunistic), "Configured TLS level, as the mx target's tls option: none, opportunistic, required, verify, mta-sts or dane")
	f.Duration("timeout", 30*time.Second, "Timeout for connecting, for each reply and for the TLS handshake")
	f.Bool("json", false, "Print the report as JSON")
	f.String("ca", "", "PEM file of CA certificates to trust besides the system roots")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return checkUsage, err })(c, nil)
	})
	return cmd
}

// checkOptions are the arguments of `caddy smtp check-tls`, checked.
type checkOptions struct {
	domain    string
	resolvers []string
	port      string
	helo      string
	level     tlsupgrade.Level
	timeout   time.Duration
	json      bool
	roots     *x509.CertPool
}

func parseCheckFlags(fl caddycmd.Flags) (*checkOptions, error) {
	if fl.NArg() != 1 {
		return nil, errors.New("want exactly one domain: caddy smtp check-tls [flags] <domain>")
	}
	domain, err := checkDomain(fl.Arg(0))
	if err != nil {
		return nil, err
	}
	o := &checkOptions{domain: domain, helo: fl.String("helo"), level: tlsupgrade.Level(fl.String("level")),
		timeout: fl.Duration("timeout"), json: fl.Bool("json")}
	if o.resolvers, err = fl.GetStringSlice("resolver"); err != nil {
		return nil, err
	}
	port := fl.Int("port")
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("--port %d: want 1 to 65535", port)
	}
	o.port = strconv.Itoa(port)
	if o.level == "" {
		o.level = tlsupgrade.LevelOpportunistic
	}
	if err := o.level.Validate(); err != nil {
		return nil, fmt.Errorf("--level: %v", err)
	}
	if o.timeout <= 0 {
		return nil, errors.New("--timeout must be positive")
	}
	if o.helo == "" {
		if o.helo, err = os.Hostname(); err != nil || o.helo == "" {
			o.helo = "localhost"
		}
	}
	if o.roots, err = tlsupgrade.LoadRoots(fl.String("ca")); err != nil {
		return nil, fmt.Errorf("--ca: %v", err)
	}
	return o, nil
}

// checkDomain returns the domain in lowercase A-label form without the
// trailing dot.
func checkDomain(arg string) (string, error) {
	d := strings.TrimSuffix(strings.TrimSpace(arg), ".")
	if d == "" || strings.HasPrefix(d, "[") || net.ParseIP(d) != nil {
		return "", fmt.Errorf("%q: want a domain name", arg)
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("%q: not a domain name: %v", arg, err)
	}
	return strings.ToLower(a), nil
}

func cmdCheckTLS(fl caddycmd.Flags) (int, error) {
	return checkTLS(context.Background(), fl, os.Stdout)
}

// checkTLS runs the check and writes the report to w; it returns the exit
// status.
func checkTLS(ctx context.Context, fl caddycmd.Flags, w io.Writer) (int, error) {
	o, err := parseCheckFlags(fl)
	if err != nil {
		return checkUsage, err
	}
	r, err := resolver.New(o.resolvers, 0)
	if err != nil {
		return checkUsage, fmt.Errorf("--resolver: %v", err)
	}
	rep := o.check(ctx, r)
	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(rep); err != nil {
			return checkFail, err
		}
	} else {
		writeCheckReport(w, rep)
	}
	if !rep.OK {
		return checkFail, fmt.Errorf("not every MX host of %s would accept delivery under its TLS policy", o.domain)
	}
	return checkOK, nil
}

// checkReport is the outcome of a check, and the --json output. Fields are
// always present; objects that do not apply are null.
type checkReport struct {
	Domain string `json:"domain"`
	// Level is the configured level (--level).
	Level string `json:"level"`
	// OK: every address of every MX host would accept delivery under its
	// policy.
	OK     bool         `json:"ok"`
	MX     mxReport     `json:"mx"`
	MTASTS mtastsReport `json:"mta_sts"`
	TLSRPT tlsrptReport `json:"tls_rpt"`
	Hosts  []hostReport `json:"hosts"`
}

type mxReport struct {
	// Authenticated is the AD bit of the MX answer.
	Authenticated bool   `json:"authenticated"`
	Error         string `json:"error"`
}

type mtastsReport struct {
	// Records are the TXT records of _mta-sts.<domain> that start with
	// "v=STSv1".
	Records []string `json:"records"`
	// Policy is the policy that delivery would use, null when none.
	Policy *stsPolicyReport `json:"policy"`
	// Applied reports whether delivery applies it: mode enforce or
	// testing, and a level other than none.
	Applied bool `json:"applied"`
	// Error is the discovery failure, in which case delivery goes on as
	// if the domain had no policy (RFC 8461 section 3.3).
	Error string `json:"error"`
}

type stsPolicyReport struct {
	Mode   string   `json:"mode"`
	MX     []string `json:"mx"`
	MaxAge int64    `json:"max_age"`
}

type tlsrptReport struct {
	// RUA are the report destinations of _smtp._tls.<domain>.
	RUA   []string `json:"rua"`
	Error string   `json:"error"`
}

type hostReport struct {
	Name       string `json:"name"`
	Preference uint16 `json:"preference"`
	// Implicit: the domain has no MX records and is its own mail host.
	Implicit bool       `json:"implicit"`
	TLSA     tlsaReport `json:"tlsa"`
	// MTASTSMatch says whether an applied MTA-STS policy lists the host;
	// null without one.
	MTASTSMatch *bool `json:"mta_sts_match"`
	// Policy is the level delivery would use for the host; empty when
	// PolicyError says that it would not use the host at all.
	Policy string `json:"policy"`
	// PolicyMTASTSTesting: an MTA-STS policy in testing mode is checked
	// along, and reported, without consequences.
	PolicyMTASTSTesting bool            `json:"policy_mta_sts_testing"`
	PolicyError         string          `json:"policy_error"`
	Addresses           []string        `json:"addresses"`
	AddressError        string          `json:"address_error"`
	Probes              []addressReport `json:"probes"`
	OK                  bool            `json:"ok"`
}

type tlsaReport struct {
	Name string `json:"name"`
	// Records are "usage selector matching-type hex-data".
	Records       []string `json:"records"`
	Usable        int      `json:"usable"`
	Authenticated bool     `json:"authenticated"`
	// Used: delivery bases the policy on these records (the MX answer was
	// authenticated too).
	Used  bool   `json:"used"`
	Error string `json:"error"`
}

// addressReport is the check of one address of a host.
type addressReport struct {
	Address string `json:"address"`
	// Policy is the connection at the host's policy; null when there is
	// no policy to try.
	Policy *attemptReport `json:"policy_attempt"`
	// Opportunistic is a second connection at the opportunistic level,
	// made when the first failed or there was no policy.
	Opportunistic *attemptReport `json:"opportunistic_attempt"`
	OK            bool           `json:"ok"`
}

// attemptReport is one connection: tlsupgrade's Result and the server
// certificate.
type attemptReport struct {
	// Level is the level dialled; Policy is what tlsupgrade.Result calls
	// the policy that applied.
	Level  string `json:"level"`
	Policy string `json:"policy"`
	// OK: the session came up within the policy.
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Stage string `json:"stage"`

	STARTTLSOffered bool              `json:"starttls_offered"`
	TLS             bool              `json:"tls"`
	Version         string            `json:"version"`
	Cipher          string            `json:"cipher"`
	Certificate     *certReport       `json:"certificate"`
	PKIXVerified    bool              `json:"pkix_verified"`
	PKIXError       string            `json:"pkix_error"`
	DANEVerified    bool              `json:"dane_verified"`
	Failure         string            `json:"failure"`
	FailureReason   string            `json:"failure_reason"`
	Fallback        string            `json:"fallback"`
	REQUIRETLS      *requireTLSReport `json:"requiretls"`
}

type certReport struct {
	Subject    string    `json:"subject"`
	Issuer     string    `json:"issuer"`
	Names      []string  `json:"names"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
	SPKISHA256 string    `json:"spki_sha256"`
}

// requireTLSReport says whether a message flagged REQUIRETLS (RFC 8689)
// could use the session.
type requireTLSReport struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// check looks everything up and connects to every address, choosing the
// policy of each MX host as smtpapp's MX target does.
func (o *checkOptions) check(ctx context.Context, r *resolver.Resolver) *checkReport {
	rep := &checkReport{Domain: o.domain, Level: string(o.level), Hosts: []hostReport{}}
	hosts, mxAuth, err := r.MXHosts(ctx, o.domain)
	rep.MX.Authenticated = mxAuth
	if err != nil {
		rep.MX.Error = err.Error()
	}
	// As in delivery, level none turns off MTA-STS and DANE.
	useStandards := o.level != tlsupgrade.LevelNone
	var sts *tlsupgrade.MTASTSPolicy
	rep.MTASTS, sts = o.lookupMTASTS(ctx, r)
	if !useStandards || (sts != nil && sts.Mode == tlsupgrade.MTASTSNone) {
		sts = nil
	}
	rep.MTASTS.Applied = sts != nil
	rep.TLSRPT = lookupTLSRPT(ctx, r, o.domain)
	if err != nil {
		return rep
	}

	var wg sync.WaitGroup
	rep.Hosts = make([]hostReport, len(hosts))
	for i, h := range hosts {
		hr := &rep.Hosts[i]
		policy, usable := o.selectPolicy(ctx, r, hr, h, mxAuth, useStandards, sts)
		ips, err := r.LookupIP(ctx, h.Host)
		if err != nil {
			hr.AddressError = err.Error()
		}
		hr.Addresses = make([]string, len(ips))
		hr.Probes = make([]addressReport, len(ips))
		requireTLSOK := mxAuth || sts.Matches(h.Host)
		for j, ip := range ips {
			hr.Addresses[j] = ip.String()
			pr := &hr.Probes[j]
			pr.Address = net.JoinHostPort(ip.String(), o.port)
			wg.Go(func() { o.probe(ctx, pr, h.Host, policy, usable, requireTLSOK) })
		}
	}
	wg.Wait()

	rep.OK = len(rep.Hosts) > 0
	for i := range rep.Hosts {
		hr := &rep.Hosts[i]
		hr.OK = hr.PolicyError == "" && len(hr.Probes) > 0
		for _, pr := range hr.Probes {
			hr.OK = hr.OK && pr.OK
		}
		rep.OK = rep.OK && hr.OK
	}
	return rep
}

// lookupMTASTS shows the _mta-sts record and looks the policy up the way
// delivery does (tlsupgrade.MTASTSCache), with a cache in memory only.
func (o *checkOptions) lookupMTASTS(ctx context.Context, r *resolver.Resolver) (mtastsReport, *tlsupgrade.MTASTSPolicy) {
	rep := mtastsReport{Records: []string{}}
	txts, err := r.LookupTXT(ctx, "_mta-sts."+o.domain)
	if err == nil {
		for _, t := range txts {
			if strings.HasPrefix(t, "v=STSv1") {
				rep.Records = append(rep.Records, t)
			}
		}
	}
	cache := &tlsupgrade.MTASTSCache{Resolver: r, Fetcher: &tlsupgrade.MTASTSFetcher{
		Timeout:     o.timeout,
		DialContext: o.policyHostDialer(r),
	}}
	p, err := cache.Lookup(ctx, o.domain)
	if err != nil {
		rep.Error = err.Error()
	}
	if p != nil {
		rep.Policy = &stsPolicyReport{Mode: string(p.Mode), MX: p.MX, MaxAge: int64(p.MaxAge / time.Second)}
		if rep.Policy.MX == nil {
			rep.Policy.MX = []string{}
		}
	}
	return rep, p
}

// policyHostDialer returns the DialContext of the MTA-STS fetcher: it
// resolves the policy host with r, so that --resolver applies to it too,
// and connects to the port the fetcher asks for (always 443).
func (o *checkOptions) policyHostDialer(r *resolver.Resolver) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := r.LookupIP(ctx, host)
		if err != nil {
			return nil, err
		}
		d := net.Dialer{Timeout: o.timeout}
		for _, ip := range ips {
			var conn net.Conn
			if conn, err = d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port)); err == nil {
				return conn, nil
			}
		}
		return nil, err
	}
}

func lookupTLSRPT(ctx context.Context, r *resolver.Resolver, domain string) tlsrptReport {
	rua, err := tlsupgrade.LookupTLSRPT(ctx, r, domain)
	rep := tlsrptReport{RUA: rua}
	if rep.RUA == nil {
		rep.RUA = []string{}
	}
	if err != nil {
		rep.Error = err.Error()
	}
	return rep
}

// selectPolicy fills in the DNS part of hr and returns the policy delivery
// would use for h, mirroring smtpapp's MX.Open: TLSA records count only
// after an authenticated MX answer, a failed TLSA lookup makes the host
// unusable (RFC 7672 section 2.1.1), and tlsupgrade.SelectPolicy decides.
// usable is false when delivery would skip the host.
func (o *checkOptions) selectPolicy(ctx context.Context, r *resolver.Resolver, hr *hostReport, h resolver.MX,
	mxAuth, useStandards bool, sts *tlsupgrade.MTASTSPolicy) (policy tlsupgrade.Policy, usable bool) {
	hr.Name, hr.Preference, hr.Implicit = h.Host, h.Pref, h.Implicit
	hr.Addresses, hr.Probes = []string{}, []addressReport{}
	if sts != nil {
		match := sts.Matches(h.Host)
		hr.MTASTSMatch = &match
	}
	hr.TLSA.Name = "_25._tcp." + h.Host
	recs, tlsaAuth, tlsaErr := r.LookupTLSA(ctx, hr.TLSA.Name)
	hr.TLSA.Records = tlsupgrade.TLSAPolicyStrings(recs)
	if hr.TLSA.Records == nil {
		hr.TLSA.Records = []string{}
	}
	hr.TLSA.Usable = len(tlsupgrade.UsableTLSA(recs))
	hr.TLSA.Authenticated = tlsaAuth
	if tlsaErr != nil && !resolver.IsNotFound(tlsaErr) {
		hr.TLSA.Error = tlsaErr.Error()
	}

	d := tlsupgrade.Destination{Configured: o.level, MXAuthenticated: mxAuth, MTASTS: sts}
	if useStandards && mxAuth {
		if hr.TLSA.Error != "" {
			hr.PolicyError = tlsupgrade.ResultDNSSECInvalid + ": " + hr.TLSA.Error
			return tlsupgrade.Policy{}, false
		}
		d.TLSA, d.TLSAAuthenticated = recs, tlsaAuth
	}
	policy, err := tlsupgrade.SelectPolicy(h.Host, d)
	if err != nil {
		hr.PolicyError = err.Error()
		return tlsupgrade.Policy{}, false
	}
	hr.TLSA.Used = policy.Level == tlsupgrade.LevelDANE
	hr.Policy = string(policy.Level)
	if hr.Policy == "" {
		hr.Policy = string(tlsupgrade.LevelOpportunistic)
	}
	hr.PolicyMTASTSTesting = policy.MTASTS != nil && policy.Level != tlsupgrade.LevelMTASTS && policy.Level != tlsupgrade.LevelDANE
	return policy, true
}

// probe connects to one address at the policy (when usable) and, if that
// fails or there is no policy, at the opportunistic level.
func (o *checkOptions) probe(ctx context.Context, pr *addressReport, host string, policy tlsupgrade.Policy, usable, requireTLSOK bool) {
	if usable {
		pr.Policy = o.attempt(ctx, pr.Address, host, policy, &requireTLSOK)
		pr.OK = pr.Policy.OK
	}
	level := policy.Level
	if pr.OK || (usable && (level == "" || level == tlsupgrade.LevelOpportunistic)) {
		return // the opportunistic attempt would be the same
	}
	pr.Opportunistic = o.attempt(ctx, pr.Address, host, tlsupgrade.Policy{Level: tlsupgrade.LevelOpportunistic}, nil)
}

// attempt runs one session: connect, EHLO, STARTTLS, EHLO, QUIT. With
// requireTLSOK it also says whether REQUIRETLS messages could use it.
func (o *checkOptions) attempt(ctx context.Context, addr, host string, policy tlsupgrade.Policy, requireTLSOK *bool) *attemptReport {
	a := &attemptReport{Level: string(policy.Level)}
	conn, err := tlsupgrade.Dial(ctx, addr, tlsupgrade.Options{
		LocalName:        o.helo,
		ServerName:       host,
		Policy:           policy,
		RootCAs:          o.roots,
		ConnectTimeout:   o.timeout,
		CommandTimeout:   o.timeout,
		HandshakeTimeout: o.timeout,
		// Each attempt reports the certificate the server sends now.
		NoSessionResumption: true,
	})
	if err != nil {
		a.Error = err.Error()
		if de, ok := errors.AsType[*tlsupgrade.DialError](err); ok {
			a.Stage = de.Stage
			a.fill(de.Result)
		}
		return a
	}
	defer conn.Close()
	a.OK = true
	a.fill(conn.Result)
	if cs, ok := conn.TLSConnectionState(); ok && len(cs.PeerCertificates) > 0 {
		a.Certificate = describeCert(cs.PeerCertificates[0])
	}
	if requireTLSOK != nil {
		advertised, _ := conn.Client.Extension("REQUIRETLS")
		a.REQUIRETLS = &requireTLSReport{OK: true}
		if err := tlsupgrade.RequireTLSSatisfied(conn.Result, *requireTLSOK, advertised); err != nil {
			msg := err.Error()
			if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
				msg = se.Message
			}
			a.REQUIRETLS = &requireTLSReport{Error: msg}
		}
	}
	return a
}

// fill copies a tlsupgrade.Result.
func (a *attemptReport) fill(res tlsupgrade.Result) {
	a.Policy = res.Policy
	a.STARTTLSOffered = res.Offered
	a.TLS, a.Version, a.Cipher = res.TLS, res.Version, res.Cipher
	a.PKIXVerified, a.PKIXError = res.Verified, res.VerifyError
	a.DANEVerified = res.DANEVerified
	a.Failure, a.FailureReason, a.Fallback = res.Failure, res.FailureReason, res.Fallback
}

func describeCert(c *x509.Certificate) *certReport {
	names := c.DNSNames
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = []string{c.Subject.CommonName}
	}
	if names == nil {
		names = []string{}
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return &certReport{Subject: c.Subject.String(), Issuer: c.Issuer.String(), Names: names,
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), SPKISHA256: hex.EncodeToString(sum[:])}
}

// writeCheckReport prints the report for people, one block per MX host
// and, inside it, one per address.
func writeCheckReport(w io.Writer, rep *checkReport) {
	fmt.Fprintf(w, "Domain %s (configured level: %s)\n", rep.Domain, rep.Level)
	mx := "DNSSEC-authenticated (AD)"
	if !rep.MX.Authenticated {
		mx = "not DNSSEC-authenticated: no DANE"
	}
	if rep.MX.Error != "" {
		mx = rep.MX.Error
	} else {
		mx = fmt.Sprintf("%d host(s), %s", len(rep.Hosts), mx)
	}
	field(w, 2, "MX", mx)
	field(w, 2, "MTA-STS", describeMTASTS(rep.MTASTS))
	switch {
	case rep.TLSRPT.Error != "":
		field(w, 2, "TLS-RPT", "lookup failed: "+rep.TLSRPT.Error)
	case len(rep.TLSRPT.RUA) == 0:
		field(w, 2, "TLS-RPT", "no record")
	default:
		field(w, 2, "TLS-RPT", strings.Join(rep.TLSRPT.RUA, ", "))
	}
	for _, h := range rep.Hosts {
		fmt.Fprintln(w)
		writeHost(w, rep, h)
	}
	fmt.Fprintln(w)
	writeVerdict(w, rep)
}

func describeMTASTS(m mtastsReport) string {
	var s string
	switch {
	case m.Policy != nil:
		s = fmt.Sprintf("mode %s, mx %s, max_age %ds", m.Policy.Mode, strings.Join(m.Policy.MX, " "), m.Policy.MaxAge)
		if !m.Applied {
			s += " (not applied)"
		}
	case m.Error != "":
		s = "discovery failed, delivery goes on as without a policy: " + m.Error
	case len(m.Records) > 0:
		s = "no usable record"
	default:
		s = "no policy"
	}
	if len(m.Records) > 0 {
		s += fmt.Sprintf(" [TXT %q]", strings.Join(m.Records, `", "`))
	}
	return s
}

func writeHost(w io.Writer, rep *checkReport, h hostReport) {
	name := h.Name
	if h.Implicit {
		name += " (implicit MX: the domain has no MX records)"
	}
	fmt.Fprintf(w, "MX %d %s\n", h.Preference, name)
	field(w, 2, "TLSA", describeTLSA(rep, h.TLSA))
	for _, r := range h.TLSA.Records {
		field(w, 2, "", r)
	}
	switch {
	case h.MTASTSMatch == nil:
		field(w, 2, "MTA-STS", "no policy applies")
	case *h.MTASTSMatch:
		field(w, 2, "MTA-STS", "host listed in the policy")
	default:
		field(w, 2, "MTA-STS", "host NOT listed in the policy")
	}
	switch {
	case h.PolicyError != "":
		field(w, 2, "Policy", "host not usable: "+h.PolicyError)
	case h.PolicyMTASTSTesting:
		field(w, 2, "Policy", h.Policy+", checked against the MTA-STS policy in testing mode")
	default:
		field(w, 2, "Policy", h.Policy)
	}
	if h.AddressError != "" {
		field(w, 2, "Addresses", h.AddressError)
	} else {
		field(w, 2, "Addresses", strings.Join(h.Addresses, " "))
	}
	for _, pr := range h.Probes {
		host, port, _ := net.SplitHostPort(pr.Address)
		fmt.Fprintf(w, "  %s[%s]:%s\n", h.Name, host, port)
		if pr.Policy != nil {
			writeAttempt(w, 4, pr.Policy)
			verdict := "would succeed under policy " + h.Policy
			if !pr.OK {
				verdict = "would FAIL under policy " + h.Policy + ": " + pr.Policy.Error
			}
			field(w, 4, "Delivery", verdict)
		} else {
			field(w, 4, "Delivery", "would not use this host")
		}
		if pr.Opportunistic != nil {
			fmt.Fprintf(w, "    Opportunistic (what a session without the policy gets):\n")
			writeAttempt(w, 6, pr.Opportunistic)
			if !pr.Opportunistic.OK {
				field(w, 6, "Error", pr.Opportunistic.Error)
			}
		}
	}
}

func describeTLSA(rep *checkReport, t tlsaReport) string {
	var s string
	switch {
	case t.Error != "":
		return t.Name + ": lookup failed: " + t.Error
	case len(t.Records) == 0:
		s = t.Name + ": no records"
	default:
		s = fmt.Sprintf("%s: %d record(s), %d usable", t.Name, len(t.Records), t.Usable)
	}
	if t.Authenticated {
		s += ", DNSSEC-authenticated"
	} else {
		s += ", not authenticated"
	}
	if len(t.Records) > 0 && !t.Used {
		switch {
		case !rep.MX.Authenticated:
			s += " (not used: the MX answer is not authenticated)"
		case !t.Authenticated:
			s += " (not used)"
		}
	}
	return s
}

// writeAttempt prints one connection, indented by indent spaces.
func writeAttempt(w io.Writer, indent int, a *attemptReport) {
	switch {
	case a.STARTTLSOffered:
		field(w, indent, "STARTTLS", "offered")
	case a.Stage == tlsupgrade.StageDial || a.Stage == tlsupgrade.StageGreeting || a.Stage == tlsupgrade.StageEHLO:
		field(w, indent, "STARTTLS", "unknown (no EHLO reply)")
	default:
		field(w, indent, "STARTTLS", "not offered")
	}
	if a.TLS {
		field(w, indent, "TLS", a.Version+", "+a.Cipher)
	} else if a.OK {
		field(w, indent, "TLS", "none: plaintext session")
	}
	if c := a.Certificate; c != nil {
		field(w, indent, "Certificate", c.Subject)
		field(w, indent, "  issuer", c.Issuer)
		field(w, indent, "  names", strings.Join(c.Names, " "))
		field(w, indent, "  expires", expiry(c.NotAfter, time.Now()))
		field(w, indent, "  spki sha256", c.SPKISHA256)
	}
	if a.TLS || a.PKIXError != "" {
		if a.PKIXVerified {
			field(w, indent, "PKIX", "verified")
		} else {
			field(w, indent, "PKIX", "not verified: "+a.PKIXError)
		}
	}
	if a.Policy == string(tlsupgrade.LevelDANE) {
		if a.DANEVerified {
			field(w, indent, "DANE", "verified")
		} else {
			field(w, indent, "DANE", "not verified")
		}
	}
	if a.Fallback != "" {
		field(w, indent, "Fallback", a.Fallback)
	}
	if a.Failure != "" {
		field(w, indent, "Failure", a.Failure+": "+a.FailureReason)
	}
	if r := a.REQUIRETLS; r != nil {
		if r.OK {
			field(w, indent, "REQUIRETLS", "messages flagged REQUIRETLS could go")
		} else {
			field(w, indent, "REQUIRETLS", "no: "+r.Error)
		}
	}
}

// expiry says when a certificate expires, relative to now.
func expiry(t, now time.Time) string {
	s := t.Format(time.RFC3339)
	if d := t.Sub(now); d > 0 {
		return s + " (in " + shortDuration(d) + ")"
	}
	return s + " (EXPIRED " + shortDuration(now.Sub(t)) + " ago)"
}

func writeVerdict(w io.Writer, rep *checkReport) {
	if rep.OK {
		fmt.Fprintf(w, "Result: every MX host of %s would accept delivery under its policy.\n", rep.Domain)
		return
	}
	if rep.MX.Error != "" {
		fmt.Fprintf(w, "Result: no delivery to %s: %s\n", rep.Domain, rep.MX.Error)
		return
	}
	var bad []string
	for _, h := range rep.Hosts {
		if !h.OK {
			bad = append(bad, h.Name)
		}
	}
	fmt.Fprintf(w, "Result: %d of %d MX host(s) of %s would not accept delivery under their policy: %s\n",
		len(bad), len(rep.Hosts), rep.Domain, strings.Join(bad, ", "))
}

// field prints "label  value" with the values of a block aligned.
func field(w io.Writer, indent int, label, value string) {
	fmt.Fprintf(w, "%*s%-14s%s\n", indent, "", label, value)
}
