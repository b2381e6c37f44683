package dsn_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/dsn"
)

// A report on a REQUIRETLS message returns the header section only, even
// with RET=FULL and room to return it all, and says the DSN needs
// REQUIRETLS (RFC 8689 section 5).
func TestRequireTLSReturnsHeadersOnly(t *testing.T) {
	for _, ret := range []string{"FULL", "HDRS", ""} {
		t.Run("RET="+ret, func(t *testing.T) {
			r := baseReport()
			r.Return = ret
			r.RequireTLS = true
			out, info := write(t, r, strings.NewReader(origMessage), 1<<20)
			if !info.RequireTLS || info.Returned != dsn.ReturnedHeaders {
				t.Fatalf("info: %+v", info)
			}
			if bytes.Contains(out, []byte("the numbers are attached")) || bytes.Contains(out, []byte("message/rfc822")) {
				t.Fatalf("the body of a REQUIRETLS message came back:\n%s", out)
			}
			p := parse(t, out)
			if p.OriginalType != "text/rfc822-headers" || string(p.Original) != origHeader || p.Report.Return != "HDRS" {
				t.Errorf("original part %s (%s):\n%q", p.OriginalType, p.Report.Return, p.Original)
			}
			said := strings.Contains(flat(p.Text), "sent with REQUIRETLS is never returned in full")
			if said != (ret == "FULL") {
				t.Errorf("text (explains REQUIRETLS: %v):\n%s", said, p.Text)
			}
		})
	}
}

// Without REQUIRETLS nothing changes: RET=FULL returns the whole message
// and the DSN does not ask for REQUIRETLS.
func TestNoRequireTLSReturnsFull(t *testing.T) {
	r := baseReport()
	r.Return = "FULL"
	out, info := write(t, r, strings.NewReader(origMessage), 1<<20)
	if info.RequireTLS || info.Returned != dsn.ReturnedFull {
		t.Fatalf("info: %+v", info)
	}
	if p := parse(t, out); p.OriginalType != "message/rfc822" || string(p.Original) != origMessage {
		t.Errorf("original part %s:\n%q", p.OriginalType, p.Original)
	}
}
