package smtpapp_test

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"testing"
)

// replyStep is one line sent and the start of the reply it must get
// (code and enhanced code). Two lines are not commands: "<starttls>"
// upgrades the connection (after a 220 to STARTTLS), "<auth>" logs in.
type replyStep struct{ send, want string }

// TestReplyCodes runs every command in every state of a session against
// a real listener and checks the reply code and enhanced status code RFC
// 5321 (sections 4.3.2 and 4.5.3), RFC 3207 and RFC 4954 give. go-smtp
// answers several of these itself with 502; each case runs on a new
// connection after the steps that lead to its state.
func TestReplyCodes(t *testing.T) {
	e := newTestEnv(t)
	srv := authServer(t, map[string]any{"listen": []any{
		map[string]any{"address": "127.0.0.1:0"},
		map[string]any{"address": "127.0.0.2:0", "tls": "implicit"}, // another address: each is listed once
	}})
	addrs := e.start(srv)
	clientTLS := &tls.Config{ServerName: testHost, RootCAs: e.rootPool()}

	ehlo := replyStep{"EHLO client.example", "250"}
	mail := replyStep{"MAIL FROM:<a@sender.test>", "250 2.1.0 Sender OK"}
	rcpt := replyStep{"RCPT TO:<u@example.test>", "250 2.1.5 Recipient OK"}
	startTLS := []replyStep{ehlo, {"STARTTLS", "220 2.0.0"}, {"<starttls>", ""}}
	afterTLS := append(startTLS[:3:3], ehlo)
	afterAuth := append(afterTLS[:4:4], replyStep{"<auth>", "235 2.7.0 Authentication successful"})

	// Each case: the state it starts from, then the command under test.
	cases := []struct {
		name     string
		implicit bool
		state    []replyStep
		test     replyStep
	}{
		// before EHLO
		{"greeting/MAIL", false, nil, replyStep{"MAIL FROM:<a@sender.test>", "503 5.5.1"}},
		{"greeting/RCPT", false, nil, replyStep{"RCPT TO:<u@example.test>", "503 5.5.1"}},
		{"greeting/DATA", false, nil, replyStep{"DATA", "503 5.5.1"}},
		{"greeting/BDAT", false, nil, replyStep{"BDAT 0 LAST", "503 5.5.1"}},
		{"greeting/AUTH", false, nil, replyStep{"AUTH PLAIN", "503 5.5.1"}},
		{"greeting/STARTTLS with parameter", false, nil, replyStep{"STARTTLS now", "501 5.5.4"}},
		{"greeting/NOOP", false, nil, replyStep{"NOOP", "250 2.0.0 OK"}},
		{"greeting/RSET", false, nil, replyStep{"RSET", "250 2.0.0"}},
		{"greeting/VRFY", false, nil, replyStep{"VRFY u", "252 2.5.0"}},
		{"greeting/EXPN", false, nil, replyStep{"EXPN list", "502 5.5.1"}},
		{"greeting/unknown", false, nil, replyStep{"FROB x", "500 5.5.2"}},
		{"greeting/HELO without domain", false, nil, replyStep{"HELO", "501 5.5.2"}},
		{"greeting/QUIT", false, nil, replyStep{"QUIT", "221 2.0.0"}},

		// after EHLO, before TLS
		{"ehlo/RCPT", false, []replyStep{ehlo}, replyStep{"RCPT TO:<u@example.test>", "503 5.5.1"}},
		{"ehlo/DATA", false, []replyStep{ehlo}, replyStep{"DATA", "503 5.5.1"}},
		{"ehlo/BDAT", false, []replyStep{ehlo}, replyStep{"BDAT 0 LAST", "503 5.5.1"}},
		{"ehlo/AUTH without mechanism", false, []replyStep{ehlo}, replyStep{"AUTH", "501 5.5.4"}},
		{"ehlo/AUTH before TLS", false, []replyStep{ehlo}, replyStep{"AUTH PLAIN", "523 5.7.10"}},
		{"ehlo/STARTTLS with parameter", false, []replyStep{ehlo}, replyStep{"STARTTLS please", "501 5.5.4"}},
		{"ehlo/STARTTLS glued parameter", false, []replyStep{ehlo}, replyStep{"STARTTLSX", "501 5.5.4"}},
		{"ehlo/STARTTLS after a refused one", false, []replyStep{ehlo, {"STARTTLS x", "501 5.5.4"}, {"STARTTLS", "220 2.0.0"}, {"<starttls>", ""}}, ehlo},
		{"ehlo/MAIL bad syntax", false, []replyStep{ehlo}, replyStep{"MAIL FROM:<a@sender.test", "501 5.5.2"}},
		{"ehlo/MAIL unknown parameter", false, []replyStep{ehlo}, replyStep{"MAIL FROM:<a@sender.test> FOO=BAR", "555 5.5.4"}},
		{"ehlo/MAIL", false, []replyStep{ehlo}, mail},
		{"ehlo/EHLO again", false, []replyStep{ehlo}, ehlo},

		// in a transaction
		{"mail/MAIL again", false, []replyStep{ehlo, mail}, replyStep{"MAIL FROM:<b@sender.test>", "503 5.5.1"}},
		{"mail/DATA", false, []replyStep{ehlo, mail}, replyStep{"DATA", "503 5.5.1"}},
		{"mail/RCPT bad syntax", false, []replyStep{ehlo, mail}, replyStep{"RCPT TO:<u@example.test", "501 5.5.2"}},
		{"mail/RCPT relay denied", false, []replyStep{ehlo, mail}, replyStep{"RCPT TO:<x@elsewhere.test>", "550 5.7.1"}},
		{"mail/RCPT unknown parameter", false, []replyStep{ehlo, mail}, replyStep{"RCPT TO:<u@example.test> FOO=BAR", "555 5.5.4"}},
		{"mail/RCPT", false, []replyStep{ehlo, mail}, rcpt},
		{"mail/RSET then RCPT", false, []replyStep{ehlo, mail, {"RSET", "250 2.0.0"}}, replyStep{"RCPT TO:<u@example.test>", "503 5.5.1"}},
		{"mail/EHLO resets", false, []replyStep{ehlo, mail, ehlo}, replyStep{"RCPT TO:<u@example.test>", "503 5.5.1"}},

		// after RCPT
		{"rcpt/MAIL again", false, []replyStep{ehlo, mail, rcpt}, replyStep{"MAIL FROM:<b@sender.test>", "503 5.5.1"}},
		{"rcpt/DATA with parameter", false, []replyStep{ehlo, mail, rcpt}, replyStep{"DATA now", "501 5.5.4"}},
		{"rcpt/DATA", false, []replyStep{ehlo, mail, rcpt, {"DATA", "354 Start mail input; end with <CRLF>.<CRLF>"}}, replyStep{"Subject: t\r\n\r\nhi\r\n.", "250 2.0.0"}},
		{"rcpt/BDAT", false, []replyStep{ehlo, mail, rcpt}, replyStep{"BDAT 18 LAST\r\nSubject: t\r\n\r\nhi", "250 2.0.0"}},
		{"rcpt/BDAT then MAIL", false, []replyStep{ehlo, mail, rcpt, {"BDAT 4\r\nab", "250 2.0.0"}}, replyStep{"MAIL FROM:<b@sender.test>", "503 5.5.1"}},
		{"rcpt/BDAT then DATA", false, []replyStep{ehlo, mail, rcpt, {"BDAT 4\r\nab", "250 2.0.0"}}, replyStep{"DATA", "503 5.5.1"}},
		{"rcpt/a STARTTLS line in DATA is content", false, []replyStep{ehlo, mail, rcpt, {"DATA", "354"}}, replyStep{"STARTTLS x\r\n.", "250 2.0.0"}},
		{"rcpt/a STARTTLS line in BDAT is content", false, []replyStep{ehlo, mail, rcpt}, replyStep{"BDAT 12 LAST\r\nSTARTTLS x", "250 2.0.0"}},

		// after STARTTLS, before the new EHLO
		{"starttls/MAIL", false, startTLS, replyStep{"MAIL FROM:<a@sender.test>", "503 5.5.1"}},
		{"starttls/RCPT", false, startTLS, replyStep{"RCPT TO:<u@example.test>", "503 5.5.1"}},
		{"starttls/DATA", false, startTLS, replyStep{"DATA", "503 5.5.1"}},
		{"starttls/AUTH", false, startTLS, replyStep{"AUTH PLAIN", "503 5.5.1"}},
		{"starttls/STARTTLS", false, startTLS, replyStep{"STARTTLS", "503 5.5.1"}},

		// after STARTTLS and EHLO
		{"tls/STARTTLS", false, afterTLS, replyStep{"STARTTLS", "503 5.5.1"}},
		{"tls/STARTTLS with parameter", false, afterTLS, replyStep{"STARTTLS x", "503 5.5.1"}},
		{"tls/AUTH without mechanism", false, afterTLS, replyStep{"AUTH", "501 5.5.4"}},
		{"tls/AUTH unknown mechanism", false, afterTLS, replyStep{"AUTH CRAM-MD5", "504 5.7.4"}},
		{"tls/AUTH bad base64", false, afterTLS, replyStep{"AUTH PLAIN !!!!", "501 5.5.2 Cannot decode base64 data"}},
		{"tls/RCPT", false, afterTLS, replyStep{"RCPT TO:<u@example.test>", "503 5.5.1"}},
		{"tls/AUTH in a transaction", false, append(afterTLS[:4:4], mail), replyStep{"AUTH PLAIN", "503 5.5.1"}},
		{"tls/MAIL again", false, append(afterTLS[:4:4], mail), replyStep{"MAIL FROM:<b@sender.test>", "503 5.5.1"}},
		{"tls/DATA", false, append(afterTLS[:4:4], mail, rcpt, replyStep{"DATA", "354"}), replyStep{"Subject: t\r\n\r\nhi\r\n.", "250 2.0.0"}},

		// after AUTH
		{"auth/AUTH again", false, afterAuth, replyStep{"AUTH PLAIN", "503 5.5.1"}},
		{"auth/RCPT", false, afterAuth, replyStep{"RCPT TO:<x@elsewhere.test>", "503 5.5.1"}},
		{"auth/relay", false, append(afterAuth[:5:5], replyStep{"MAIL FROM:<alice@example.test>", "250 2.1.0"}), replyStep{"RCPT TO:<x@elsewhere.test>", "250 2.1.5"}},
		{"auth/MAIL again", false, append(afterAuth[:5:5], replyStep{"MAIL FROM:<alice@example.test>", "250 2.1.0"}), replyStep{"MAIL FROM:<alice@example.test>", "503 5.5.1"}},

		// implicit TLS, after EHLO
		{"implicit/STARTTLS", true, []replyStep{ehlo}, replyStep{"STARTTLS", "503 5.5.1"}},
		{"implicit/RCPT", true, []replyStep{ehlo}, replyStep{"RCPT TO:<u@example.test>", "503 5.5.1"}},
		{"implicit/DATA", true, []replyStep{ehlo, mail}, replyStep{"DATA", "503 5.5.1"}},
		{"implicit/MAIL again", true, []replyStep{ehlo, mail}, replyStep{"MAIL FROM:<b@sender.test>", "503 5.5.1"}},
		{"implicit/AUTH without mechanism", true, []replyStep{ehlo}, replyStep{"AUTH", "501 5.5.4"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d *dialog
			if tc.implicit {
				d = dialTLS(t, addrs[1], clientTLS)
			} else {
				d = dial(t, addrs[0])
			}
			d.expect("220")
			for _, s := range append(tc.state, tc.test) {
				switch s.send {
				case "<starttls>":
					tlsc := tls.Client(d.conn, clientTLS)
					if err := tlsc.Handshake(); err != nil {
						t.Fatalf("TLS handshake: %v", err)
					}
					d.conn, d.r = tlsc, newDialog(t, tlsc).r
					continue
				case "<auth>":
					s.send = "AUTH PLAIN " + plainAuth("alice@example.test", "s3cret")
				}
				d.send("%s", s.send)
				if got := d.reply(); !strings.HasPrefix(got, s.want) {
					t.Fatalf("%q: got %q, want %q", s.send, got, s.want+" ...")
				}
			}
			// The connection is still in step: NOOP gets its own reply.
			if tc.test.send != "QUIT" {
				d.cmd("NOOP", "250 2.0.0")
			}
		})
	}
}

// TestStartTLSLinesInContentUnchanged: lines that look like STARTTLS with a
// parameter inside DATA and BDAT content are message text, stored as sent
// (the filter that answers such a command with 501 must not touch them).
func TestStartTLSLinesInContentUnchanged(t *testing.T) {
	e := newTestEnv(t)
	d := dial(t, e.start(map[string]any{})[0])
	d.expect("220")
	d.cmd("EHLO client.example", "250")
	body := "Subject: t\r\n\r\nSTARTTLS x\r\nstarttls now\r\n"
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<content@example.test>", "250")
	d.cmd("DATA", "354")
	d.raw(body + ".\r\n")
	d.expect("250 2.0.0")
	d.cmd("MAIL FROM:<a@sender.test>", "250")
	d.cmd("RCPT TO:<content@example.test>", "250")
	d.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
	d.expect("250 2.0.0")
	d.cmd("STARTTLS x", "501 5.5.4") // and commands are still filtered
	for _, f := range e.waitMail("example.test", "content", 2) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(data), body) {
			t.Errorf("stored message ends %q, want %q", data[max(0, len(data)-len(body)):], body)
		}
	}
}
