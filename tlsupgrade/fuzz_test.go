package tlsupgrade

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/resolver"
)

// The policy parsers take what a remote domain publishes (a policy file over
// HTTPS, TXT records, reports mailed to us): whatever they accept must mean
// the same after a trip through our own formatting, and anything else must be
// an error.

func FuzzParseMTASTSPolicy(f *testing.F) {
	f.Add([]byte("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"), "mx1.example.com")
	f.Add([]byte("version: STSv1\nmode: none\nmax_age: 0\n"), "a.example.net")
	f.Add([]byte("mode:\ttesting \nversion:STSv1\nmx: MX.Example.COM\nmax_age: 31557600\next-1.x: hé llo\n"), "mx.example.com.")
	f.Add([]byte("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n"), "a.b")
	f.Add([]byte("version: STSv1\n\nmode: enforce\n"), "")
	f.Fuzz(func(t *testing.T, b []byte, host string) {
		p, err := ParseMTASTSPolicy(b)
		if err != nil {
			if p != nil {
				t.Fatalf("policy %+v with error %v", p, err)
			}
			return
		}
		if p.Version != "STSv1" || !slices.Contains([]MTASTSMode{MTASTSEnforce, MTASTSTesting, MTASTSNone}, p.Mode) {
			t.Fatalf("accepted version %q mode %q", p.Version, p.Mode)
		}
		if p.MaxAge < 0 || p.MaxAge > MaxMTASTSMaxAge || p.MaxAge%time.Second != 0 {
			t.Fatalf("max_age %v", p.MaxAge)
		}
		if len(p.MX) == 0 && p.Mode != MTASTSNone {
			t.Fatalf("mode %s without mx", p.Mode)
		}
		for _, mx := range p.MX {
			if mx != strings.ToLower(mx) || !isMXPattern(mx) {
				t.Fatalf("mx pattern %q", mx)
			}
		}
		// parse(format(p)) == p, and formatting is stable.
		text := p.String()
		again, err := ParseMTASTSPolicy([]byte(text))
		if err != nil {
			t.Fatalf("own format %q does not parse: %v", text, err)
		}
		if !reflect.DeepEqual(again, p) || again.String() != text {
			t.Fatalf("%q parses as %+v, then formats as %q; was %+v", b, again, again.String(), p)
		}
		checkMatches(t, p, host)
	})
}

// checkMatches checks Matches against the rules of RFC 8461 section 4.1,
// for host as given and with case and a trailing dot changed.
func checkMatches(t *testing.T, p *MTASTSPolicy, host string) {
	t.Helper()
	got := p.Matches(host)
	want := false
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	for _, mx := range p.MX {
		if parent, ok := strings.CutPrefix(mx, "*."); ok {
			label, rest, _ := strings.Cut(h, ".")
			want = want || rest == parent && label != "" && label != "*" && strings.Contains(h, ".")
		} else {
			want = want || h == mx
		}
	}
	if got != want {
		t.Fatalf("policy mx %q: Matches(%q) = %v", p.MX, host, got)
	}
	if up := asciiUpper(host); p.Matches(up) != got {
		t.Fatalf("policy mx %q: Matches(%q) = %v, but Matches(%q) = %v", p.MX, host, got, up, !got)
	}
	if !strings.HasSuffix(host, ".") && p.Matches(host+".") != got {
		t.Fatalf("policy mx %q: a trailing dot on %q changes the match", p.MX, host)
	}
}

// asciiUpper upper-cases ASCII letters only (Unicode case mapping is not
// what DNS names compare by).
func asciiUpper(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, s)
}

func FuzzParseMTASTSRecord(f *testing.F) {
	f.Add("v=STSv1; id=20160831085700Z;")
	f.Add("v=STSv1;id=abc ; ext=val")
	f.Add("v=STSv1; id=a; id=b")
	f.Add("v=STSv1 ;")
	f.Add("v=STSv1; id=" + strings.Repeat("x", 33))
	f.Fuzz(func(t *testing.T, txt string) {
		rec, err := ParseMTASTSRecord(txt)
		if err != nil {
			if rec != nil {
				t.Fatalf("record %+v with error %v", rec, err)
			}
			return
		}
		if !strings.HasPrefix(txt, "v=STSv1") || !isPolicyID(rec.ID) || !strings.Contains(txt, "id="+rec.ID) {
			t.Fatalf("%q accepted with id %q", txt, rec.ID)
		}
		own := "v=STSv1; id=" + rec.ID
		if again, err := ParseMTASTSRecord(own); err != nil || *again != *rec {
			t.Fatalf("%q parses as %v, %v; want %+v", own, again, err, rec)
		}
	})
}

func FuzzParseTLSRPTRecord(f *testing.F) {
	f.Add("v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
	f.Add("v=TLSRPTv1;rua=https://reports.example.com/v1,mailto:a@b.example ;x=y;")
	f.Add("v=TLSRPTv1; rua=ftp://x.example/, mailto:r@example.net; rua=mailto:second@example.net")
	f.Add("v=TLSRPTv1; rua=mailto:")
	f.Add("v=TLSRPTv1; rua=https:///path")
	f.Fuzz(func(t *testing.T, txt string) {
		rua, err := ParseTLSRPTRecord(txt)
		if err != nil {
			if rua != nil {
				t.Fatalf("uris %q with error %v", rua, err)
			}
			return
		}
		if len(rua) == 0 || !strings.HasPrefix(txt, "v=TLSRPTv1") {
			t.Fatalf("%q accepted with uris %q", txt, rua)
		}
		for _, u := range rua {
			scheme, _, _ := strings.Cut(strings.ToLower(u), ":")
			if scheme != "mailto" && scheme != "https" || !strings.Contains(txt, u) || strings.ContainsAny(u, ",; \t") {
				t.Fatalf("%q gives uri %q", txt, u)
			}
		}
		own := "v=TLSRPTv1; rua=" + strings.Join(rua, ",")
		if again, err := ParseTLSRPTRecord(own); err != nil || !slices.Equal(again, rua) {
			t.Fatalf("%q parses as %q, %v; want %q", own, again, err, rua)
		}
	})
}

func FuzzParseTLSRPTReport(f *testing.F) {
	rep := &TLSRPTReport{
		OrganizationName: "Example", ContactInfo: "mailto:tlsrpt@example.com", ReportID: "r1",
		DateRange: TLSRPTDateRange{Start: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)},
		Policies: []TLSRPTPolicySet{{
			Policy:         TLSRPTPolicy{Type: PolicyTypeSTS, String: []string{"version: STSv1", "mode: enforce"}, Domain: "example.com", MXHost: []string{"mx.example.com"}},
			Summary:        TLSRPTSummary{TotalSuccessfulSessionCount: 3, TotalFailureSessionCount: 1},
			FailureDetails: []FailureDetail{{ResultType: ResultCertificateExpired, ReceivingIP: "192.0.2.1", FailedSessionCount: 1}},
		}},
	}
	gz, err := rep.Gzip()
	if err != nil {
		f.Fatal(err)
	}
	plain, _ := json.Marshal(rep)
	f.Add(gz)
	f.Add(plain)
	f.Add([]byte(`{"date-range":{"start-datetime":"2026-01-02T00:00:00+01:00"},"policies":[{"summary":{"total-failure-session-count":-1}}]}`))
	f.Add([]byte("\x1f\x8b\x08\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseTLSRPTReport(b)
		if err != nil {
			if r != nil {
				t.Fatalf("report with error %v", err)
			}
			return
		}
		// What we read, we send on unchanged: JSON(parse(Gzip(r))) == JSON(r).
		want, err := json.Marshal(r)
		if err != nil {
			// A time.Time that parsed but does not format (year
			// outside 0-9999) is not something Gzip can send either.
			if _, gerr := r.Gzip(); gerr == nil {
				t.Fatalf("Marshal fails (%v) but Gzip does not", err)
			}
			return
		}
		gz, err := r.Gzip()
		if err != nil {
			t.Fatalf("Gzip: %v", err)
		}
		back, err := ParseTLSRPTReport(gz)
		if err != nil {
			t.Fatalf("own gzip does not parse: %v", err)
		}
		got, _ := json.Marshal(back)
		if !bytes.Equal(got, want) {
			t.Fatalf("round trip changed the report:\n%s\n%s", want, got)
		}
	})
}

// FuzzDANE feeds arbitrary TLSA records (usage, selector, matching type,
// data length, data; repeated) to UsableTLSA and DANEVerify against a real
// chain: a leaf for mx.example.test and the CA that issued it.
func FuzzDANE(f *testing.F) {
	ca := newTestCA(f)
	chain := chainOf(f, withCA(ca.valid(f, "mx.example.test"), ca))
	leaf := chain[0]
	f.Add([]byte{3, 1, 1, 32}, "mx.example.test")
	f.Add(append([]byte{2, 0, 1, 32}, sha256Of(ca.cert.Raw)...), "MX.example.test.")
	f.Add(append([]byte{3, 1, 2, 64}, make([]byte, 64)...), "*.example.test")
	f.Add(append([]byte{3, 1, 1, 32}, sha256Of(leaf.RawSubjectPublicKeyInfo)...), "other.example")
	f.Add([]byte{0, 0, 0, 1, 7, 3, 0, 0, 0, 2, 5, 1, 0}, "")
	f.Fuzz(func(t *testing.T, wire []byte, name string) {
		recs := decodeTLSA(wire)
		usable := UsableTLSA(slices.Clone(recs))
		if again := UsableTLSA(slices.Clone(usable)); !reflect.DeepEqual(again, usable) {
			t.Fatalf("UsableTLSA not idempotent: %v, then %v", usable, again)
		}
		i := 0
		for _, u := range usable {
			if !usableTLSA(u) {
				t.Fatalf("unusable record %v kept", u)
			}
			for i < len(recs) && !reflect.DeepEqual(recs[i], u) {
				i++
			}
			if i == len(recs) {
				t.Fatalf("usable %v is not a subsequence of %v", usable, recs)
			}
			i++
		}

		verr := DANEVerify(chain, recs, name)
		switch err := verr; {
		case len(usable) == 0:
			if err != ErrNoUsableTLSA {
				t.Fatalf("no usable records: %v", err)
			}
		case err == nil:
			matched := false
			for _, r := range usable {
				for _, c := range chain {
					matched = matched || tlsaMatches(r, c)
				}
			}
			if !matched {
				t.Fatalf("verified by %v, which match no certificate", usable)
			}
		default:
			var pe *PolicyError
			if !errors.As(err, &pe) || !slices.Contains([]string{ResultTLSAInvalid, ResultCertificateHostMismatch,
				ResultCertificateExpired, ResultCertificateNotTrusted, ResultValidationFailure}, pe.ResultType) {
				t.Fatalf("error %v (%T)", err, err)
			}
		}

		// A full DANE-EE record of the leaf always verifies, whatever
		// else is published and whatever the name.
		ee := resolver.TLSA{Usage: TLSAUsageDANEEE, Selector: TLSASelectorCert, MatchingType: TLSAMatchFull, Data: leaf.Raw}
		if err := DANEVerify(chain, append(slices.Clone(recs), ee), name); err != nil {
			t.Fatalf("with the leaf's own 3 0 0 record: %v", err)
		}
		// A full DANE-TA record of the CA added to records that did not
		// verify verifies exactly when the leaf carries the name.
		ta := resolver.TLSA{Usage: TLSAUsageDANETA, Selector: TLSASelectorCert, MatchingType: TLSAMatchFull, Data: ca.cert.Raw}
		err := DANEVerify(chain, append(slices.Clone(recs), ta), name)
		if want := verr == nil || matchHostPattern("mx.example.test", name); (err == nil) != want {
			t.Fatalf("with the CA's 2 0 0 record, name %q: %v (want a match: %v)", name, err, want)
		}
	})
}

// decodeTLSA reads records as usage, selector, matching type, data length
// and data, until the input runs out (a short last record is cut).
func decodeTLSA(b []byte) []resolver.TLSA {
	var recs []resolver.TLSA
	for len(b) >= 4 {
		n := min(int(b[3]), len(b)-4)
		recs = append(recs, resolver.TLSA{Usage: b[0], Selector: b[1], MatchingType: b[2], Data: b[4 : 4+n : 4+n]})
		b = b[4+n:]
	}
	return recs
}
