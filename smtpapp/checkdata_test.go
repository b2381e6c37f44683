package smtpapp_test

import (
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// TestAuthResultsFilter checks that Authentication-Results fields claiming
// our authserv-id are removed from the header section (folded or not,
// whatever the case, with comments), and that everything else passes
// byte for byte: other servers' fields, lookalike ids, the body, long
// lines; whatever the pieces the data comes in.
func TestAuthResultsFilter(t *testing.T) {
	long := strings.Repeat("x", 40000)
	cases := []struct {
		name, in, want string
		removed        int
	}{
		{"ours removed",
			"Authentication-Results: mx.example.com; spf=pass\r\nSubject: hi\r\n\r\nbody\r\n",
			"Subject: hi\r\n\r\nbody\r\n", 1},
		{"folded, other case, comment, version",
			"From: a@b.example\r\nauthentication-results:\r\n (forged) MX.Example.COM 1;\r\n\tdkim=pass header.d=b.example\r\nTo: c@d.example\r\n\r\nbody\r\n",
			"From: a@b.example\r\nTo: c@d.example\r\n\r\nbody\r\n", 1},
		{"other ids kept",
			"Authentication-Results: mx.example.com.evil; spf=pass\r\nAuthentication-Results: relay.example.org;\r\n dkim=pass\r\n\r\nbody\r\n",
			"Authentication-Results: mx.example.com.evil; spf=pass\r\nAuthentication-Results: relay.example.org;\r\n dkim=pass\r\n\r\nbody\r\n", 0},
		{"only in the header section",
			"Subject: x\r\n\r\nAuthentication-Results: mx.example.com; spf=pass\r\n",
			"Subject: x\r\n\r\nAuthentication-Results: mx.example.com; spf=pass\r\n", 0},
		{"no body, field last",
			"Subject: x\r\nAuthentication-Results: mx.example.com; none",
			"Subject: x\r\n", 1},
		{"long lines pass",
			"X-Long: " + long + "\r\nAuthentication-Results: other.example; " + long + "\r\n\r\n" + long + "\r\n",
			"X-Long: " + long + "\r\nAuthentication-Results: other.example; " + long + "\r\n\r\n" + long + "\r\n", 0},
		{"long one of ours dropped whole",
			"Authentication-Results: mx.example.com; " + long + "\r\n " + long + "\r\nSubject: y\r\n\r\nb\r\n",
			"Subject: y\r\n\r\nb\r\n", 1},
	}
	for _, c := range cases {
		for _, chunk := range []int{1, 7, 4096, 1 << 20} {
			got, removed, err := smtpapp.FilterAuthResults(c.in, "mx.example.com", chunk)
			if err != nil {
				t.Fatalf("%s/%d: %v", c.name, chunk, err)
			}
			if got != c.want || removed != c.removed {
				t.Errorf("%s/%d: removed %d, want %d; got\n%.200q\nwant\n%.200q", c.name, chunk, removed, c.removed, got, c.want)
			}
		}
	}
}

// TestHeaderBlock checks the header fields the checks add: one folded
// Authentication-Results field with our id, fields with bad names
// dropped, values kept on one line.
func TestHeaderBlock(t *testing.T) {
	got := smtpapp.HeaderBlock("mx.example.com", []authres.Result{
		&authres.SPFResult{Value: authres.ResultPass, From: "a@b.example"},
		&authres.DKIMResult{Value: authres.ResultFail, Domain: "b.example", Reason: "bad\r\nsignature"},
	}, []smtpapp.HeaderField{{Name: "X-Spam-Flag", Value: "YES\r\nBcc: x@y"}, {Name: "Bad Name", Value: "v"}})
	want := "Authentication-Results: mx.example.com;\r\n\tspf=pass smtp.mailfrom=a@b.example;\r\n\tdkim=fail reason=\"bad  signature\" header.d=b.example\r\n" +
		"X-Spam-Flag: YES  Bcc: x@y\r\n"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if smtpapp.HeaderBlock("mx.example.com", nil, nil) != "" {
		t.Error("no results and no fields should add nothing")
	}
}

// TestHeaderBlockFolded: a folded value (a DKIM signature) is kept as it
// is when well formed; one that could end the field or the header early
// is dropped.
func TestHeaderBlockFolded(t *testing.T) {
	good := "v=1; a=rsa-sha256; d=example.org;\r\n s=sel; b=abc\r\n\tdef"
	got := smtpapp.HeaderBlock("mx", nil, []smtpapp.HeaderField{
		{Name: "DKIM-Signature", Value: good, Folded: true},
		{Name: "X-Bad", Value: "a\r\n\r\nInjected: yes", Folded: true},
		{Name: "X-Bad", Value: "a\r\nInjected: yes", Folded: true},
		{Name: "X-Bad", Value: "a\nb", Folded: true},
	})
	if got != "DKIM-Signature: "+good+"\r\n" {
		t.Errorf("got %q", got)
	}
}
