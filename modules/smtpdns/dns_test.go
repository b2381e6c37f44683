package smtpdns

import (
	"strings"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/modules/mtasts"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// TestRecordsMXAndPolicies: MX records name the servers with a port 25
// listener, in order, and not the submission server; without key reuse
// the TLSA record is a note; without an mta_sts handler, too.
func TestRecordsMXAndPolicies(t *testing.T) {
	app := &smtpapp.App{Servers: map[string]*smtpapp.Server{
		"mx2":        {Hostname: "mx2.example.com", Listen: []*smtpapp.Listener{{Address: "192.0.2.2:25"}}},
		"mx1":        {Hostname: "mx1.example.com", Listen: []*smtpapp.Listener{{Address: ":25"}, {Address: ":2525"}}},
		"submission": {Hostname: "smtp.example.com", RequireAuth: true, Listen: []*smtpapp.Listener{{Address: ":587"}}},
	}}
	recs := Records(app, "example.com", nil)
	var mx, notes []string
	for _, r := range recs {
		if r.Type == "MX" {
			mx = append(mx, r.Value)
		}
		if r.Value == "" {
			notes = append(notes, r.Type)
		}
	}
	if strings.Join(mx, ",") != "10 mx1.example.com.,20 mx2.example.com." {
		t.Errorf("MX %v", mx)
	}
	if strings.Join(notes, ",") != "TXT,TLSA,TLSA" { // no MTA-STS policy, two hosts without pinned keys
		t.Errorf("records without a value: %v (%+v)", notes, recs)
	}
	recs = Records(app, "example.com", []mtasts.Policy{{ID: "abc", Mode: "enforce", MX: []string{"mx1.example.com"}}})
	for _, r := range recs {
		if r.Name == "_mta-sts.example.com." && r.Value != `"v=STSv1; id=abc"` {
			t.Errorf("MTA-STS %+v", r)
		}
	}
}
