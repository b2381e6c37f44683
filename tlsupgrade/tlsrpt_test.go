package tlsupgrade

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/resolver"
)

var (
	rptStart = time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	rptEnd   = rptStart.Add(24*time.Hour - time.Second)
)

// recordSample records sessions to two domains: MTA-STS for
// company-y.example, DANE for company-z.example.
func recordSample(r *TLSRPTRecorder) {
	sts := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSTesting, MX: []string{"*.mail.company-y.example"}, MaxAge: 86400 * time.Second}
	fail := &FailureDetail{
		ResultType:            ResultCertificateExpired,
		SendingMTAIP:          "2001:db8:abcd:0012::1",
		ReceivingMXHostname:   "mx1.mail.company-y.example",
		ReceivingMXHelo:       "mx1.mail.company-y.example",
		ReceivingIP:           "203.0.113.56",
		FailedSessionCount:    99, // ignored: one call is one session
		AdditionalInformation: "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported",
		FailureReasonCode:     "X509_V_ERR_CERT_HAS_EXPIRED",
	}
	for range 3 {
		r.Record("company-y.example", PolicyTypeSTS, sts.PolicyStrings(), "mx1.mail.company-y.example", true, nil)
	}
	r.Record("company-y.example", PolicyTypeSTS, sts.PolicyStrings(), "mx1.mail.company-y.example", false, fail)
	r.Record("Company-Y.example.", PolicyTypeSTS, sts.PolicyStrings(), "mx2.mail.company-y.example", false, fail)
	tlsa := []resolver.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{0xab, 0xcd}}}
	r.Record("company-z.example", PolicyTypeTLSA, TLSAPolicyStrings(tlsa), "mx.company-z.example", false,
		&FailureDetail{ResultType: ResultTLSAInvalid, ReceivingMXHostname: "mx.company-z.example"})
	r.Record("company-z.example", PolicyTypeNoPolicy, nil, "mx.company-z.example", true, nil)
}

func TestTLSRPTReports(t *testing.T) {
	var r TLSRPTRecorder
	recordSample(&r)
	reports := r.Reports("Company-X", "sts-reporting@company-x.example", rptStart, rptEnd)
	if len(reports) != 2 {
		t.Fatalf("%d reports, want 2", len(reports))
	}
	y := reports[0]
	if y.OrganizationName != "Company-X" || y.ContactInfo != "sts-reporting@company-x.example" ||
		!y.DateRange.Start.Equal(rptStart) || !y.DateRange.End.Equal(rptEnd) || !strings.Contains(y.ReportID, "company-y.example") {
		t.Errorf("report header = %+v", y)
	}
	wantY := []TLSRPTPolicySet{{
		Policy: TLSRPTPolicy{
			Type:   "sts",
			String: []string{"version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"},
			Domain: "company-y.example",
			MXHost: []string{"mx1.mail.company-y.example", "mx2.mail.company-y.example"},
		},
		Summary: TLSRPTSummary{TotalSuccessfulSessionCount: 3, TotalFailureSessionCount: 2},
		FailureDetails: []FailureDetail{{
			ResultType:            "certificate-expired",
			SendingMTAIP:          "2001:db8:abcd:0012::1",
			ReceivingMXHostname:   "mx1.mail.company-y.example",
			ReceivingMXHelo:       "mx1.mail.company-y.example",
			ReceivingIP:           "203.0.113.56",
			FailedSessionCount:    2,
			AdditionalInformation: "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported",
			FailureReasonCode:     "X509_V_ERR_CERT_HAS_EXPIRED",
		}},
	}}
	if !reflect.DeepEqual(y.Policies, wantY) {
		t.Errorf("policies = %+v\nwant %+v", y.Policies, wantY)
	}
	z := reports[1].Policies
	if len(z) != 2 || z[0].Policy.Type != "no-policy-found" || z[1].Policy.Type != "tlsa" ||
		!slices.Equal(z[1].Policy.String, []string{"3 1 1 abcd"}) || z[1].Summary.TotalFailureSessionCount != 1 {
		t.Errorf("company-z policies = %+v", z)
	}
	if again := r.Reports("Company-X", "", rptStart, rptEnd); len(again) != 0 {
		t.Errorf("Reports did not start afresh: %+v", again)
	}
}

// TestTLSRPTJSON checks the field names of RFC 8460 section 4.4 in the JSON
// of a report, at every level, and the date format.
func TestTLSRPTJSON(t *testing.T) {
	var r TLSRPTRecorder
	recordSample(&r)
	b, err := json.Marshal(r.Reports("Company-X", "sts-reporting@company-x.example", rptStart, rptEnd)[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keysOf := func(v any) []string {
		obj, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%v is not an object", v)
		}
		var keys []string
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return keys
	}
	check := func(what string, v any, want ...string) {
		t.Helper()
		sort.Strings(want)
		if got := keysOf(v); !slices.Equal(got, want) {
			t.Errorf("%s keys = %q\nwant %q", what, got, want)
		}
	}
	check("report", m, "organization-name", "date-range", "contact-info", "report-id", "policies")
	check("date-range", m["date-range"], "start-datetime", "end-datetime")
	policy := m["policies"].([]any)[0]
	check("policies[0]", policy, "policy", "summary", "failure-details")
	p := policy.(map[string]any)
	check("policy", p["policy"], "policy-type", "policy-string", "policy-domain", "mx-host")
	check("summary", p["summary"], "total-successful-session-count", "total-failure-session-count")
	check("failure-details[0]", p["failure-details"].([]any)[0], "result-type", "sending-mta-ip", "receiving-mx-hostname",
		"receiving-mx-helo", "receiving-ip", "failed-session-count", "additional-information", "failure-reason-code")

	dr := m["date-range"].(map[string]any)
	if dr["start-datetime"] != "2026-04-01T00:00:00Z" || dr["end-datetime"] != "2026-04-01T23:59:59Z" {
		t.Errorf("date-range = %v, want RFC 3339 in UTC", dr)
	}
	if _, ok := p["policy"].(map[string]any)["policy-string"].([]any); !ok {
		t.Error("policy-string is not an array")
	}
	if _, ok := p["policy"].(map[string]any)["mx-host"].([]any); !ok {
		t.Error("mx-host is not an array")
	}
}

func TestTLSRPTGzip(t *testing.T) {
	var r TLSRPTRecorder
	recordSample(&r)
	for _, rep := range r.Reports("Company-X", "mailto:tlsrpt@company-x.example", rptStart, rptEnd) {
		gz, err := rep.Gzip()
		if err != nil {
			t.Fatal(err)
		}
		if len(gz) < 2 || gz[0] != 0x1f || gz[1] != 0x8b {
			t.Fatalf("not gzip: % x", gz[:min(len(gz), 4)])
		}
		back, err := ParseTLSRPTReport(gz)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*back, rep) {
			t.Errorf("round trip:\n got %+v\nwant %+v", *back, rep)
		}
		plain, _ := json.Marshal(rep)
		if back, err := ParseTLSRPTReport(plain); err != nil || !reflect.DeepEqual(*back, rep) {
			t.Errorf("plain JSON: %+v, %v", back, err)
		}
	}
	if _, err := ParseTLSRPTReport([]byte{0x1f, 0x8b, 0, 0}); err == nil {
		t.Error("a broken gzip stream parsed")
	}
}

func TestTLSRPTFilename(t *testing.T) {
	rep := TLSRPTReport{
		DateRange: TLSRPTDateRange{Start: rptStart, End: rptEnd},
		ReportID:  "20260401T000000Z.company-y.example.0a1b",
		Policies:  []TLSRPTPolicySet{{Policy: TLSRPTPolicy{Domain: "company-y.example"}}},
	}
	want := "mail.sender.example!company-y.example!1775001600!1775087999!20260401T000000Zcompanyyexample0a1b.json.gz"
	if got := rep.Filename("mail.sender.example"); got != want {
		t.Errorf("Filename = %q\nwant       %q", got, want)
	}
}

func TestTLSRPTRecorderConcurrent(t *testing.T) {
	var r TLSRPTRecorder
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				fail := &FailureDetail{ResultType: ResultSTARTTLSNotSupported, ReceivingMXHostname: "mx.example"}
				r.Record("example", PolicyTypeSTS, []string{"version: STSv1"}, "mx.example", (i+j)%2 == 0, fail)
			}
		})
	}
	wg.Wait()
	reports := r.Reports("org", "", rptStart, rptEnd)
	if len(reports) != 1 || len(reports[0].Policies) != 1 {
		t.Fatalf("reports = %+v", reports)
	}
	p := reports[0].Policies[0]
	if p.Summary.TotalSuccessfulSessionCount != 400 || p.Summary.TotalFailureSessionCount != 400 ||
		len(p.FailureDetails) != 1 || p.FailureDetails[0].FailedSessionCount != 400 {
		t.Errorf("policy = %+v", p)
	}
}

func TestParseTLSRPTRecord(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string // nil: error
	}{
		{"v=TLSRPTv1; rua=mailto:reports@example.com", []string{"mailto:reports@example.com"}},
		{"v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt", []string{"https://reporting.example.com/v1/tlsrpt"}},
		{"v=TLSRPTv1;rua=mailto:a@example.com, https://r.example.com/x ;", []string{"mailto:a@example.com", "https://r.example.com/x"}},
		{"v=TLSRPTv1; rua=mailto:a@example.com,ftp://x.example.com/r", []string{"mailto:a@example.com"}},
		{"v=TLSRPTv1; ext=1; rua=mailto:a@example.com; rua=mailto:b@example.com", []string{"mailto:a@example.com"}},
		{"v=TLSRPTv1; rua=MAILTO:a@example.com", []string{"MAILTO:a@example.com"}},
		{"v=TLSRPTv1; rua=ftp://x.example.com/r", nil},
		{"v=TLSRPTv1; rua=", nil},
		{"v=TLSRPTv1; rua=mailto:a@example.com,,mailto:b@example.com", nil},
		{"v=TLSRPTv1; rua=example.com", nil},
		{"v=TLSRPTv1; rua=mailto:a b@example.com", nil},
		{"v=TLSRPTv1; rua=https://r.example.com/a|b", nil},
		{"v=TLSRPTv1; rua=mailto:r\u00e9@example.com", nil},
		{"v=TLSRPTv1; ext=1", nil},
		{"v=TLSRPTv1", nil},
		{"v=TLSRPTv2; rua=mailto:a@example.com", nil},
		{"rua=mailto:a@example.com; v=TLSRPTv1", nil},
	} {
		got, err := ParseTLSRPTRecord(tc.in)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%q: got %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestLookupTLSRPT(t *testing.T) {
	checkLeaks(t)
	dns, res := newDNS(t)
	dns.AddTXT("_smtp._tls.example.test", "v=TLSRPTv1; ", "rua=mailto:tlsrpt@example.test")
	dns.AddTXT("_smtp._tls.example.test", "v=spf1 -all")
	dns.AddTXT("_smtp._tls.two.test", "v=TLSRPTv1; rua=mailto:a@two.test")
	dns.AddTXT("_smtp._tls.two.test", "v=TLSRPTv1; rua=mailto:b@two.test")
	ctx := testContext(t)
	if rua, err := LookupTLSRPT(ctx, res, "Example.Test."); err != nil || !slices.Equal(rua, []string{"mailto:tlsrpt@example.test"}) {
		t.Errorf("example.test: %q, %v", rua, err)
	}
	for _, domain := range []string{"two.test", "none.test"} {
		if rua, err := LookupTLSRPT(ctx, res, domain); err != nil || rua != nil {
			t.Errorf("%s: %q, %v; want no reports", domain, rua, err)
		}
	}
}
