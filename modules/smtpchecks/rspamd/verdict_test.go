package rspamd

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// TestVerdict maps rspamd replies (as /checkv2 sends them) to verdicts,
// for the actions and settings the real-rspamd test cannot reach from
// 127.0.0.1: soft reject, greylist either way, add_header quarantine,
// and the shapes of the milter block.
func TestVerdict(t *testing.T) {
	five := 5.0
	for _, tc := range []struct {
		name    string
		r       Rspamd
		reply   string
		result  string
		code    int
		headers string // "Name: value" lines joined by "|", checked as a substring
		remove  string // names joined by ","
		note    string
	}{
		{name: "reject", reply: `{"action":"reject","score":15,"required_score":15,"symbols":{"GTUBE":{"name":"GTUBE","score":0}}}`,
			result: smtpapp.VerdictReject, code: 550, note: "reject, score 15.00/15.00"},
		{name: "soft reject", reply: `{"action":"soft reject","score":1,"required_score":15}`, result: smtpapp.VerdictTempfail, code: 451},
		{name: "greylist", reply: `{"action":"greylist","score":4,"required_score":15}`, result: smtpapp.VerdictTempfail, code: 451},
		{name: "greylist accepted", r: Rspamd{Greylist: actionAccept}, reply: `{"action":"greylist","score":4,"required_score":15}`,
			result: smtpapp.VerdictAccept, headers: "X-Spam-Score: 4.00|X-Spam-Status: No, score=4.00"},
		{name: "greylist over quarantine_at", r: Rspamd{QuarantineAt: &five}, reply: `{"action":"greylist","score":5,"required_score":15}`,
			result: smtpapp.VerdictQuarantine},
		{name: "add header", reply: `{"action":"add header","score":7.5,"required_score":15,"symbols":{"A":{"score":3},"B":{"score":4},"C":{"score":0.5},"D":{"score":0}}}`,
			result: smtpapp.VerdictAccept, headers: "X-Spam: Yes|X-Spam-Score: 7.50|X-Spam-Status: Yes, score=7.50 required=15.00 action=\"add header\" tests=[B(4.00), A(3.00), C(0.50), D(0.00)]",
			remove: "X-Spam,X-Spam-Score,X-Spam-Status", note: "add header, score 7.50/15.00 (B(4.00), A(3.00), C(0.50))"},
		{name: "add header quarantined", r: Rspamd{AddHeader: actionQuarantine}, reply: `{"action":"add header","score":7,"required_score":15}`,
			result: smtpapp.VerdictQuarantine, headers: "X-Spam: Yes"},
		{name: "rewrite subject, rspamd's", reply: `{"action":"rewrite subject","score":8,"required_score":15,"subject":"[SPAM] hi"}`,
			result: smtpapp.VerdictAccept, headers: "Subject: [SPAM] hi|X-Spam: Yes", remove: "Subject,X-Spam"},
		{name: "rewrite subject, ours", reply: `{"action":"rewrite subject","score":8,"required_score":15}`,
			result: smtpapp.VerdictAccept, headers: "Subject: ***SPAM*** hello there"},
		{name: "no action below quarantine_at", r: Rspamd{QuarantineAt: &five}, reply: `{"action":"no action","score":4.99,"required_score":15}`,
			result: smtpapp.VerdictAccept, headers: "X-Spam-Status: No, score=4.99"},
		{name: "milter shapes", reply: `{"action":"no action","score":0,"required_score":15,"milter":{
			"add_headers":{"X-One":"1","X-Two":{"value":"2","order":0},"X-Three":[{"value":"3a"},{"value":"3b"}],"X-Spam-Score":"99","X-Bad":7},
			"remove_headers":{"X-Old":1}}}`,
			result: smtpapp.VerdictAccept, headers: "X-Spam-Score: 0.00|X-Spam-Status: No, score=0.00 required=15.00 action=\"no action\" tests=[]|X-One: 1|X-Three: 3a|X-Three: 3b|X-Two: 2",
			remove: "X-Spam,X-Spam-Score,X-Spam-Status,X-Old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			if r.AddHeader == "" {
				r.AddHeader = actionTag
			}
			if r.Greylist == "" {
				r.Greylist = actionTempfail
			}
			var rep reply
			if err := json.Unmarshal([]byte(tc.reply), &rep); err != nil {
				t.Fatal(err)
			}
			v := r.verdict(&rep, "hello there")
			if v.Result != tc.result {
				t.Errorf("result %s, want %s", v.Result, tc.result)
			}
			if tc.code != 0 && (v.Reply == nil || v.Reply.Code != tc.code || strings.Contains(v.Reply.Message, "rspamd")) {
				t.Errorf("reply %v, want %d without internals", v.Reply, tc.code)
			}
			var fields []string
			for _, f := range v.Headers {
				fields = append(fields, f.Name+": "+f.Value)
			}
			if got := strings.Join(fields, "|"); !strings.Contains(got, tc.headers) {
				t.Errorf("headers %q, want %q", got, tc.headers)
			}
			if strings.Count(strings.Join(fields, "|"), "X-Spam-Score") > 1 {
				t.Errorf("X-Spam-Score twice: %q", fields)
			}
			if got := strings.Join(v.RemoveHeaders, ","); !strings.Contains(got, tc.remove) {
				t.Errorf("removed %q, want %q", got, tc.remove)
			}
			if !strings.HasPrefix(v.Note, tc.note) || !strings.Contains(v.Reason, fmt.Sprintf("%.2f", rep.Score)) {
				t.Errorf("note %q reason %q, want note %q", v.Note, v.Reason, tc.note)
			}
		})
	}
}

// TestHeaderGrabber keeps the Subject of a header section written in
// pieces, folded, and stops at the end of the header.
func TestHeaderGrabber(t *testing.T) {
	var h headerGrabber
	msg := "From: a@b\r\nSubject: a long\r\n\tsubject\r\nSubject: second\r\n\r\nSubject: in the body\r\n"
	for i := 0; i < len(msg); i += 3 {
		h.write([]byte(msg[i:min(i+3, len(msg))]))
	}
	if got := h.subject(); got != "a long subject" {
		t.Errorf("subject %q", got)
	}
	if !h.full || len(h.buf) > len(msg) {
		t.Errorf("kept %d bytes, full %v", len(h.buf), h.full)
	}
}

// TestEnvelopeHeaders: the envelope, the queue ID and the client's TLS
// session go to rspamd in the headers its protocol defines.
func TestEnvelopeHeaders(t *testing.T) {
	h := http.Header{}
	(&Rspamd{}).setHeaders(h, &smtpapp.MessageInput{Sender: "a@sender.test", Recipients: []string{"b@example.test", "c@example.test"},
		ClientIP: net.IPv4(192, 0, 2, 1), Helo: "client.example", AuthUser: "alice", Server: "mx", QueueID: "ABCDEFGHIJKLMNOP",
		TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_128_GCM_SHA256"})
	for k, want := range map[string]string{"From": "a@sender.test", "IP": "192.0.2.1", "Helo": "client.example", "User": "alice",
		"MTA-Name": "mx", "Queue-Id": "ABCDEFGHIJKLMNOP", "TLS-Version": "TLSv1.3", "TLS-Cipher": "TLS_AES_128_GCM_SHA256"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if got := h.Values("Rcpt"); len(got) != 2 {
		t.Errorf("Rcpt %v", got)
	}
	plain := http.Header{}
	(&Rspamd{}).setHeaders(plain, &smtpapp.MessageInput{Sender: "a@sender.test"})
	if plain.Get("TLS-Version") != "" || plain.Get("TLS-Cipher") != "" {
		t.Errorf("TLS headers for a plaintext session: %v", plain)
	}
}
