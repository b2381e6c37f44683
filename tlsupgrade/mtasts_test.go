package tlsupgrade

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseMTASTSPolicy(t *testing.T) {
	enforce := func(maxAge time.Duration, mx ...string) *MTASTSPolicy {
		return &MTASTSPolicy{Version: "STSv1", Mode: MTASTSEnforce, MX: mx, MaxAge: maxAge}
	}
	for _, tc := range []struct {
		name string
		in   string
		want *MTASTSPolicy // nil: an error containing err
		err  string
	}{
		{"LF", "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 86400\n",
			enforce(86400*time.Second, "mx1.example.com", "*.example.net"), ""},
		{"CRLF", "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmax_age: 604800\r\n",
			enforce(604800*time.Second, "mx1.example.com"), ""},
		{"no final line end", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 60",
			enforce(time.Minute, "mx.example.com"), ""},
		{"mixed line ends", "version: STSv1\r\nmode: enforce\nmx: mx.example.com\r\nmax_age: 60\n",
			enforce(time.Minute, "mx.example.com"), ""},
		{"spaces and tabs", "version:STSv1\nmode:\t enforce \t\nmx:   mx.example.com\nmax_age: 60 \n",
			enforce(time.Minute, "mx.example.com"), ""},
		{"any order", "mx: mx.example.com\nmax_age: 60\nmode: enforce\nversion: STSv1\n",
			enforce(time.Minute, "mx.example.com"), ""},
		{"mx lowercased", "version: STSv1\nmode: enforce\nmx: MX.Example.COM\nmax_age: 60\n",
			enforce(time.Minute, "mx.example.com"), ""},
		{"testing", "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 0\n",
			&MTASTSPolicy{Version: "STSv1", Mode: MTASTSTesting, MX: []string{"mx.example.com"}}, ""},
		{"none without mx", "version: STSv1\nmode: none\nmax_age: 31557600\n",
			&MTASTSPolicy{Version: "STSv1", Mode: MTASTSNone, MaxAge: MaxMTASTSMaxAge}, ""},
		{"extensions ignored", "version: STSv1\nmode: enforce\nx-note: hello wörld\nmx: mx.example.com\nmax_age: 60\n",
			enforce(time.Minute, "mx.example.com"), ""},
		{"first mode wins", "version: STSv1\nmode: testing\nmode: enforce\nmx: mx.example.com\nmax_age: 60\n",
			&MTASTSPolicy{Version: "STSv1", Mode: MTASTSTesting, MX: []string{"mx.example.com"}, MaxAge: time.Minute}, ""},
		{"first max_age wins", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 60\nmax_age: 120\n",
			enforce(time.Minute, "mx.example.com"), ""},

		{"missing version", "mode: enforce\nmx: mx.example.com\nmax_age: 60\n", nil, "no version"},
		{"version STSv2", "version: STSv2\nmode: enforce\nmx: mx.example.com\nmax_age: 60\n", nil, "version"},
		{"version lowercase", "version: stsv1\nmode: enforce\nmx: mx.example.com\nmax_age: 60\n", nil, "version"},
		{"missing mode", "version: STSv1\nmx: mx.example.com\nmax_age: 60\n", nil, "no mode"},
		{"bad mode", "version: STSv1\nmode: enforcing\nmx: mx.example.com\nmax_age: 60\n", nil, "mode"},
		{"mode uppercase", "version: STSv1\nmode: Enforce\nmx: mx.example.com\nmax_age: 60\n", nil, "mode"},
		{"missing max_age", "version: STSv1\nmode: enforce\nmx: mx.example.com\n", nil, "no max_age"},
		{"max_age too large", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 31557601\n", nil, "more than"},
		{"max_age 11 digits", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 00000000060\n", nil, "1 to 10 digits"},
		{"max_age negative", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: -1\n", nil, "digits"},
		{"max_age empty", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age:\n", nil, "digits"},
		{"missing mx", "version: STSv1\nmode: enforce\nmax_age: 60\n", nil, "no mx"},
		{"wildcard not leftmost", "version: STSv1\nmode: enforce\nmx: mx.*.example.com\nmax_age: 60\n", nil, "mx pattern"},
		{"bare wildcard", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 60\n", nil, "mx pattern"},
		{"partial wildcard", "version: STSv1\nmode: enforce\nmx: mx*.example.com\nmax_age: 60\n", nil, "mx pattern"},
		{"double wildcard", "version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 60\n", nil, "mx pattern"},
		{"mx trailing dot", "version: STSv1\nmode: enforce\nmx: mx.example.com.\nmax_age: 60\n", nil, "mx pattern"},
		{"mx with port", "version: STSv1\nmode: enforce\nmx: mx.example.com:25\nmax_age: 60\n", nil, "mx pattern"},
		{"empty line", "version: STSv1\n\nmode: enforce\nmx: mx.example.com\nmax_age: 60\n", nil, "empty line"},
		{"blank line at end", "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 60\n\n", nil, "empty line"},
		{"no colon", "version: STSv1\nmode enforce\nmx: mx.example.com\nmax_age: 60\n", nil, `no ":"`},
		{"space before colon", "version : STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 60\n", nil, "field name"},
		{"HTML", "<html><body>version: STSv1</body></html>", nil, ""},
		{"empty", "", nil, "empty line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMTASTSPolicy([]byte(tc.in))
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want an error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			// What String writes parses back to the same policy.
			again, err := ParseMTASTSPolicy([]byte(got.String()))
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("String round trip: %+v, %v\n%s", again, err, got)
			}
		})
	}
}

func TestParseMTASTSPolicyTooLarge(t *testing.T) {
	in := "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 60\nx-pad: " + strings.Repeat("a", 64<<10) + "\n"
	if _, err := ParseMTASTSPolicy([]byte(in)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("err = %v", err)
	}
}

func TestMTASTSPolicyMatches(t *testing.T) {
	p := &MTASTSPolicy{MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mail.example.com":    true,
		"MAIL.Example.com.":   true, // MX targets come fully qualified
		"example.com":         false,
		"mail2.example.com":   false,
		"a.mail.example.com":  false,
		"mx1.example.net":     true,
		"MX1.EXAMPLE.NET.":    true,
		"example.net":         false, // the wildcard needs a label
		"a.b.example.net":     false, // exactly one label
		".example.net":        false,
		"*.example.net":       false,
		"mx1.example.net.org": false,
		"":                    false,
	} {
		if got := p.Matches(host); got != want {
			t.Errorf("Matches(%q) = %v, want %v", host, got, want)
		}
	}
	var none *MTASTSPolicy
	if none.Matches("mail.example.com") {
		t.Error("a nil policy matches")
	}
}

func TestParseMTASTSRecord(t *testing.T) {
	for _, tc := range []struct {
		in, id string // id "" = error
	}{
		{"v=STSv1; id=20160831085700Z;", "20160831085700Z"},
		{"v=STSv1;id=abc", "abc"},
		{"v=STSv1 ;\tid=abc ; ", "abc"},
		{"v=STSv1; ext=val; id=abc", "abc"},
		{"v=STSv1; id=first; id=second", "first"},
		{"v=STSv1; id=" + strings.Repeat("a", 32), strings.Repeat("a", 32)},
		{"v=STSv1; id=" + strings.Repeat("a", 33), ""},
		{"v=STSv1;", ""},
		{"v=STSv1", ""},
		{"v=STSv1; ext=val", ""},
		{"v=STSv1; id=a-b", ""},
		{"v=STSv1; id=", ""},
		{"v=STSv2; id=abc", ""},
		{" v=STSv1; id=abc", ""},
		{"id=abc; v=STSv1", ""},
		{"v=STSv1;; id=abc", ""},
		{"v=STSv1; ext=a b; id=abc", ""},
		{"v=STSv1; -ext=val; id=abc", ""},
	} {
		rec, err := ParseMTASTSRecord(tc.in)
		switch {
		case tc.id == "" && err == nil:
			t.Errorf("%q: got %+v, want an error", tc.in, rec)
		case tc.id != "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.id != "" && rec.ID != tc.id:
			t.Errorf("%q: id %q, want %q", tc.in, rec.ID, tc.id)
		}
	}
}
