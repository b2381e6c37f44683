package tlsupgrade

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddy-smtp/caddy-smtp/resolver"
)

// The result types of RFC 8460 section 4.3, for [Result.Failure],
// [PolicyError] and [FailureDetail].
const (
	// Negotiation failures (section 4.3.1).
	ResultSTARTTLSNotSupported    = "starttls-not-supported"
	ResultCertificateHostMismatch = "certificate-host-mismatch"
	ResultCertificateExpired      = "certificate-expired"
	ResultCertificateNotTrusted   = "certificate-not-trusted"
	ResultValidationFailure       = "validation-failure"
	// DANE policy failures (section 4.3.2.1).
	ResultTLSAInvalid   = "tlsa-invalid"
	ResultDNSSECInvalid = "dnssec-invalid"
	ResultDANERequired  = "dane-required"
	// MTA-STS policy failures (section 4.3.2.2).
	ResultSTSPolicyFetchError = "sts-policy-fetch-error"
	ResultSTSPolicyInvalid    = "sts-policy-invalid"
	ResultSTSWebPKIInvalid    = "sts-webpki-invalid"
)

// The policy types of a TLS-RPT report (RFC 8460 section 4.4).
const (
	PolicyTypeSTS      = "sts"
	PolicyTypeTLSA     = "tlsa"
	PolicyTypeNoPolicy = "no-policy-found"
)

// Media types of a TLS-RPT report (RFC 8460 section 6).
const (
	TLSRPTMediaTypeJSON = "application/tlsrpt+json"
	TLSRPTMediaTypeGzip = "application/tlsrpt+gzip"
)

// TLSRPTReport is an aggregate report of RFC 8460 section 4.4, for one
// policy domain.
type TLSRPTReport struct {
	OrganizationName string            `json:"organization-name"`
	DateRange        TLSRPTDateRange   `json:"date-range"`
	ContactInfo      string            `json:"contact-info"`
	ReportID         string            `json:"report-id"`
	Policies         []TLSRPTPolicySet `json:"policies"`
}

// TLSRPTDateRange is the period a report covers, in UTC.
type TLSRPTDateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// TLSRPTPolicySet is one entry of "policies": a policy, its counts and
// its failures.
type TLSRPTPolicySet struct {
	Policy         TLSRPTPolicy    `json:"policy"`
	Summary        TLSRPTSummary   `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// TLSRPTPolicy describes the policy that was applied.
type TLSRPTPolicy struct {
	// Type is "sts", "tlsa" or "no-policy-found".
	Type string `json:"policy-type"`
	// String is the policy: the lines of an MTA-STS policy
	// ([MTASTSPolicy.PolicyStrings]) or the TLSA records in presentation
	// form ([TLSAPolicyStrings]).
	String []string `json:"policy-string,omitempty"`
	// Domain is the policy domain (the recipient domain).
	Domain string `json:"policy-domain"`
	// MXHost lists the MX hosts the sessions went to.
	MXHost []string `json:"mx-host,omitempty"`
}

// TLSRPTSummary counts sessions.
type TLSRPTSummary struct {
	TotalSuccessfulSessionCount int64 `json:"total-successful-session-count"`
	TotalFailureSessionCount    int64 `json:"total-failure-session-count"`
}

// FailureDetail is one kind of failed session and how many there were.
type FailureDetail struct {
	ResultType            string `json:"result-type"`
	SendingMTAIP          string `json:"sending-mta-ip,omitempty"`
	ReceivingMXHostname   string `json:"receiving-mx-hostname,omitempty"`
	ReceivingMXHelo       string `json:"receiving-mx-helo,omitempty"`
	ReceivingIP           string `json:"receiving-ip,omitempty"`
	FailedSessionCount    int64  `json:"failed-session-count"`
	AdditionalInformation string `json:"additional-information,omitempty"`
	FailureReasonCode     string `json:"failure-reason-code,omitempty"`
}

// TLSAPolicyStrings returns TLSA records the way a TLS-RPT report of type
// "tlsa" lists them: "usage selector matching hex-data".
func TLSAPolicyStrings(recs []resolver.TLSA) []string {
	s := make([]string, len(recs))
	for i, r := range recs {
		s[i] = fmt.Sprintf("%d %d %d %x", r.Usage, r.Selector, r.MatchingType, r.Data)
	}
	return s
}

// Gzip returns the report as gzipped JSON, the form it is mailed or posted
// in (RFC 8460 section 5).
func (r *TLSRPTReport) Gzip() ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(r); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// maxTLSRPTReport bounds what ParseTLSRPTReport decompresses.
const maxTLSRPTReport = 64 << 20

// ParseTLSRPTReport parses a report, gzipped or plain JSON.
func ParseTLSRPTReport(b []byte) (*TLSRPTReport, error) {
	var r io.Reader = bytes.NewReader(b)
	if len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		r = io.LimitReader(zr, maxTLSRPTReport)
	}
	var rep TLSRPTReport
	if err := json.NewDecoder(r).Decode(&rep); err != nil {
		return nil, fmt.Errorf("tls-rpt report: %w", err)
	}
	return &rep, nil
}

// Filename returns the file name of the report in a mail (RFC 8460 section
// 5.3): sender!policy-domain!begin!end!report-id.json.gz, with the period in
// seconds since the epoch. sender is the domain of the reporting
// organisation. Characters of the report id other than letters and digits
// are left out.
func (r *TLSRPTReport) Filename(sender string) string {
	domain := ""
	if len(r.Policies) > 0 {
		domain = r.Policies[0].Policy.Domain
	}
	id := strings.Map(func(c rune) rune {
		if c < 0x80 && isLetDig(byte(c)) {
			return c
		}
		return -1
	}, r.ReportID)
	name := sender + "!" + domain + "!" + strconv.FormatInt(r.DateRange.Start.Unix(), 10) +
		"!" + strconv.FormatInt(r.DateRange.End.Unix(), 10)
	if id != "" {
		name += "!" + id
	}
	return name + ".json.gz"
}

// TLSRPTRecorder adds up the outcome of outbound sessions per policy for
// TLS-RPT. It is safe for concurrent use; the zero value is ready.
type TLSRPTRecorder struct {
	mu       sync.Mutex
	policies map[tlsrptKey]*tlsrptTally
	gen      uint64 // changes with every change of policies
}

type tlsrptKey struct {
	domain, policyType, policy string
}

// tlsrptTally is what has been recorded for one policy.
type tlsrptTally struct {
	policy       TLSRPTPolicy
	success      int64
	failure      int64
	failures     map[FailureDetail]int64 // keys have FailedSessionCount 0
	failureOrder []FailureDetail
}

// Record counts one session to mxHost under the policy of policyDomain:
// policyType is "sts", "tlsa" or "no-policy-found", policyStrings the policy
// (see TLSRPTPolicy.String). success reports whether the session met the
// policy; a session that was delivered only because the MTA-STS policy is in
// testing mode did not. failure, optional, describes a failed session; its
// FailedSessionCount is ignored (each call is one session) and sessions with
// equal details are counted together.
func (r *TLSRPTRecorder) Record(policyDomain, policyType string, policyStrings []string, mxHost string, success bool, failure *FailureDetail) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tally(policyDomain, policyType, policyStrings)
	t.addMX(mxHost)
	if success {
		t.success++
		return
	}
	t.failure++
	if failure != nil {
		d := *failure
		d.FailedSessionCount = 0
		if _, seen := t.failures[d]; !seen {
			t.failureOrder = append(t.failureOrder, d)
		}
		t.failures[d]++
	}
}

// RecordResult records the outcome of one outbound session, or of one MX
// host that could not be used, for the domain's daily report. A connection
// failure before TLS (no TLS and no Failure) is not a TLS result and is
// left out. sts is the domain's MTA-STS policy, if any.
func (r *TLSRPTRecorder) RecordResult(domain string, res Result, sts *MTASTSPolicy, host string) {
	if !res.TLS && res.Failure == "" {
		return
	}
	var strs []string
	if res.PolicyType() == PolicyTypeSTS && sts != nil {
		strs = sts.PolicyStrings()
	}
	var detail *FailureDetail
	if res.Failure != "" {
		detail = &FailureDetail{ResultType: res.Failure, ReceivingMXHostname: host,
			FailedSessionCount: 1, AdditionalInformation: res.FailureReason}
	}
	r.Record(domain, res.PolicyType(), strs, host, res.Failure == "", detail)
}

// Reports returns one report per policy domain with everything recorded
// since the previous call, and starts afresh: call it once per reporting
// period (RFC 8460 section 4.1: a day, UTC midnight to midnight). org and
// contact are the reporting organisation and its contact (an email address
// or a URI); start and end bound the period. Reports are sorted by domain.
func (r *TLSRPTRecorder) Reports(org, contact string, start, end time.Time) []TLSRPTReport {
	r.mu.Lock()
	policies := r.policies
	r.policies = nil
	r.gen++
	r.mu.Unlock()

	byDomain := make(map[string][]TLSRPTPolicySet)
	for key, t := range policies {
		byDomain[key.domain] = append(byDomain[key.domain], t.set())
	}
	start, end = start.UTC().Truncate(time.Second), end.UTC().Truncate(time.Second)
	reports := make([]TLSRPTReport, 0, len(byDomain))
	for domain, sets := range byDomain {
		slices.SortFunc(sets, func(a, b TLSRPTPolicySet) int {
			return cmp.Or(cmp.Compare(a.Policy.Type, b.Policy.Type),
				slices.Compare(a.Policy.String, b.Policy.String))
		})
		reports = append(reports, TLSRPTReport{
			OrganizationName: org,
			DateRange:        TLSRPTDateRange{Start: start, End: end},
			ContactInfo:      contact,
			ReportID:         reportID(start, domain),
			Policies:         sets,
		})
	}
	slices.SortFunc(reports, func(a, b TLSRPTReport) int {
		return cmp.Compare(a.Policies[0].Policy.Domain, b.Policies[0].Policy.Domain)
	})
	return reports
}

// reportID makes a unique report id: the start of the period, the domain
// and random letters.
func reportID(start time.Time, domain string) string {
	var b [6]byte
	rand.Read(b[:])
	return start.Format("20060102T150405Z") + "." + domain + "." + hex.EncodeToString(b[:])
}

// ParseTLSRPTRecord parses the text of a TXT record _smtp._tls.<domain>
// (RFC 8460 section 3): "v=TLSRPTv1" first, then fields separated by ";";
// "rua=" is required and holds one or more URIs separated by ","; other
// fields are extensions and are ignored, and so is a repeated rua. It
// returns the mailto: and https: URIs, in order; URIs of other schemes are
// left out, and when none is left that is an error.
func ParseTLSRPTRecord(txt string) ([]string, error) {
	fields, err := splitTagList(txt, "v=TLSRPTv1")
	if err != nil {
		return nil, fmt.Errorf("tls-rpt record: %w", err)
	}
	var rua []string
	seen := false
	for _, f := range fields {
		name, value, _ := strings.Cut(f, "=")
		if name != "rua" {
			if err := checkExtension(name, value); err != nil {
				return nil, fmt.Errorf("tls-rpt record: %w", err)
			}
			continue
		}
		if seen {
			continue
		}
		seen = true
		for u := range strings.SplitSeq(value, ",") {
			u = strings.Trim(u, " \t")
			parsed, err := url.Parse(u)
			if u == "" || !isURIText(u) || err != nil || parsed.Scheme == "" {
				return nil, fmt.Errorf("tls-rpt record: bad rua URI %q", u)
			}
			switch strings.ToLower(parsed.Scheme) {
			case "mailto":
				if parsed.Opaque != "" {
					rua = append(rua, u)
				}
			case "https":
				if parsed.Host != "" {
					rua = append(rua, u)
				}
			}
		}
	}
	switch {
	case !seen:
		return nil, errors.New("tls-rpt record: no rua")
	case len(rua) == 0:
		return nil, errors.New("tls-rpt record: no mailto: or https: rua")
	}
	return rua, nil
}

// isURIText reports whether s holds only characters a URI may contain (RFC
// 3986 section 2): printable US-ASCII other than space and "<>\"\\^`{|}.
// url.Parse lets more through ("mailto:a b" has an opaque part with a
// space).
func isURIText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("<>\"\\^`{|}", c) >= 0 {
			return false
		}
	}
	return true
}

// LookupTLSRPT returns the report URIs of domain from its TXT record
// _smtp._tls.<domain> (RFC 8460 section 3): records that do not begin with
// "v=TLSRPTv1;" are ignored, and unless exactly one remains the domain does
// not want reports: nil and no error. A record that does not parse is an
// error; so is a failed lookup (try again later).
func LookupTLSRPT(ctx context.Context, r TXTResolver, domain string) ([]string, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	txts, err := r.LookupTXT(ctx, "_smtp._tls."+domain)
	if resolver.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	txt, ok := singleRecord(txts, "v=TLSRPTv1;")
	if !ok {
		return nil, nil
	}
	return ParseTLSRPTRecord(txt)
}
