package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// interopMessage is a message with the things that break when a hop is not
// transparent: 8-bit text, lines that start with dots (dot-stuffing on
// every hop), trailing white space, a tab, a 900-octet line and an empty
// line before the end. It has every header Postfix would otherwise add.
func interopMessage(subject, msgID string) []byte {
	lines := []string{
		"Date: Sat, 28 Nov 2026 11:00:00 +0000",
		"From: Alice <alice@sender.test>",
		"To: Bob <bob@example.test>",
		"Subject: " + subject,
		"Message-ID: <" + msgID + ">",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 8bit",
		"",
		"Grüße aus Köln, ½ € — 8-bit text.",
		".a line that starts with a dot",
		"..and one with two",
		".",
		"trailing white space   ",
		"\ta tab-indented line",
		strings.Repeat("0123456789", 90),
		"",
		"last line",
	}
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// swaksData writes msg into a file for `swaks --data @file`. swaks
// dot-stuffs the data itself but, unless the data already ends with the
// closing dot, adds CRLF before the one it appends: a message ending in
// CRLF would gain an empty line. So the file carries the closing dot.
func swaksData(t *testing.T, msg []byte) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "swaks-*.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(append([]byte{}, msg...), ".\r\n"...)); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// swaks runs swaks with a time limit.
func swaks(t *testing.T, args ...string) toolResult {
	t.Helper()
	bin := requireTool(t, "swaks")
	return runTool(t, 3*time.Minute, nil, nil, bin, args...)
}

// TestPostfixRelaysToGateway: a private Postfix relays to the gateway with
// smtp_tls_security_level=verify against Caddy's internal CA, matching the
// certificate to the relay host name `localhost`. The message arrives byte
// for byte (see checkGatewayCopy) and our Received field says TLSv1.3.
func TestPostfixRelaysToGateway(t *testing.T) {
	requireTool(t, "swaks")
	g := newGateway(t)
	gwAddr := loopback(freePort(t))
	g.start(g.config(map[string]any{
		"hostname": "localhost",
		"servers":  map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": gwAddr}}}},
	}, nil), gwAddr)
	waitTLSReady(t, gwAddr, "localhost", poolFromFile(t, g.rootPath()), 30*time.Second)

	p := newPostfix(t, nil)
	caFile := filepath.Join(p.conf, "caddy-root.crt")
	copyFile(t, g.rootPath(), caFile, 0o644)
	gwPort := portOf(gwAddr)
	p.settings["relayhost"] = "[localhost]:" + gwPort
	// [localhost] is looked up with the system resolver (/etc/hosts), not
	// DNS: there is none here.
	p.settings["smtp_host_lookup"] = "native"
	p.settings["smtp_tls_security_level"] = "verify"
	p.settings["smtp_tls_verify_cert_match"] = "hostname"
	p.settings["smtp_tls_CAfile"] = caFile
	p.start()

	orig := interopMessage("postfix to gateway", "p2g@sender.test")
	qid, sent := p.submit(orig, 60*time.Second)
	if !strings.Contains(sent, "relay=localhost[127.0.0.1]:"+gwPort) {
		t.Errorf("delivered through an unexpected relay: %s", sent)
	}
	verified := p.findLog("Verified TLS connection established to localhost[127.0.0.1]:" + gwPort)
	if verified == "" {
		t.Fatalf("postfix did not log a verified TLS connection to the gateway:\n%s", p.log())
	}
	t.Logf("postfix: %s", verified)
	received := checkGatewayCopy(t, g, "localhost", qid, orig)
	t.Logf("our Received header:\n%s", received)
}

// submit hands msg (alice@sender.test to bob@example.test) to the
// instance's smtpd with swaks and waits until Postfix has sent it on. It
// returns Postfix's queue ID and its "status=sent" log line.
func (p *postfixInstance) submit(msg []byte, limit time.Duration) (qid, sent string) {
	p.t.Helper()
	res := swaks(p.t, "--server", p.addr(), "--helo", "client.sender.test",
		"--from", "alice@sender.test", "--to", "bob@example.test", "--data", "@"+swaksData(p.t, msg))
	if res.code != 0 {
		p.t.Fatalf("swaks into postfix: exit %d\n%s", res.code, res.out)
	}
	qid = postfixQueueID(p.t, res.out)
	sent = p.waitLog(limit, qid+": to=<bob@example.test>", "status=sent")
	p.t.Logf("postfix: %s", sent)
	return qid, sent
}

// checkGatewayCopy checks what our maildir stored of a message Postfix
// relayed to us: exactly the fields prepended on the way, in this order —
//
//	Return-Path, Delivered-To   (our maildir target)
//	Received ... (caddy-smtp)   (our server host, with TLS 1.3)
//	Received ... (Postfix)      (Postfix's smtpd, with its queue ID)
//
// and then the original as swaks submitted it, byte for byte. It returns
// our Received field.
func checkGatewayCopy(t *testing.T, g *gateway, host, qid string, orig []byte) string {
	t.Helper()
	files := waitMaildir(t, g.maildir("example.test", "bob"), 1, 30*time.Second)
	stored, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	fields, rest := stripFields(t, stored,
		[]string{"Return-Path", "<alice@sender.test>"},
		[]string{"Delivered-To", "bob@example.test"},
		[]string{"Received", "(caddy-smtp)", "by " + host + " ", "(using TLSv1.3 with cipher", "with ESMTPS"},
		[]string{"Received", "(Postfix)", "by postfix.example.internal", qid},
	)
	sameBytes(t, "message relayed by postfix", rest, orig)
	return fields[2]
}

// TestGatewayRelaysToPostfix: the gateway's queue relays to a private
// Postfix that stores into a virtual Maildir. With Postfix offering
// STARTTLS (self-signed certificate) the hop is TLS 1.3 (opportunistic:
// unverified, delivered); with Postfix's TLS off the same route falls back
// to plaintext and the delivery log says why.
func TestGatewayRelaysToPostfix(t *testing.T) {
	p := newPostfix(t, nil)
	kp := newCert(t, p.conf, "smtpd", nil, false, "postfix.example.internal")
	vmail := p.virtualMailboxes("example.test", "bob")
	for k, v := range map[string]string{
		"smtpd_tls_security_level": "may",
		"smtpd_tls_cert_file":      kp.cert,
		"smtpd_tls_key_file":       kp.key,
	} {
		p.settings[k] = v
	}
	p.start()
	mailbox := filepath.Join(vmail, "example.test", "bob")

	g := newGateway(t)
	gwAddr := loopback(freePort(t))
	g.start(g.config(map[string]any{
		"hostname": "localhost",
		"servers":  map[string]any{"mx": map[string]any{"listen": []any{map[string]any{"address": gwAddr}}}},
		"routes": []any{map[string]any{
			"domains": []string{"example.test"},
			"deliver": map[string]any{"target": "relay", "hosts": []string{p.addr()}},
		}},
	}, nil), gwAddr)

	send := func(subject string) string {
		c := dialSMTP(t, gwAddr, nil)
		c.cmd("EHLO client.sender.test", 250)
		c.cmd("MAIL FROM:<alice@sender.test>", 250)
		c.cmd("RCPT TO:<bob@example.test>", 250)
		code, text := c.data(interopMessage(subject, strings.ReplaceAll(subject, " ", "-")+"@sender.test"))
		if code != 250 {
			t.Fatalf("DATA: %s", text)
		}
		c.cmd("QUIT", 221)
		return text[strings.LastIndex(text, " ")+1:] // "250 2.0.0 OK queued as ID"
	}
	// attempt returns the delivery attempt that delivered a message, and
	// logs the ones before it.
	attempt := func(id string) map[string]any {
		e := g.waitLog("delivery attempt", 60*time.Second, func(e map[string]any) bool {
			return e["msg_id"] == id && e["delivered"] == float64(1)
		})
		for _, x := range g.logEntries() {
			if x["msg"] == "delivery attempt" && x["msg_id"] == id && x["delivered"] != float64(1) {
				t.Logf("earlier attempt for %s: %v", id, x)
			}
		}
		t.Logf("delivery attempt: %v", e)
		return e
	}

	// 1. STARTTLS offered: delivered over TLS 1.3.
	idTLS := send("to postfix over tls")
	files := waitMaildir(t, mailbox, 1, 60*time.Second)
	e := attempt(idTLS)
	if e["delivered"] != float64(1) || e["tls"] != true || e["tls_version"] != "TLSv1.3" || e["tls_verified"] != false {
		t.Errorf("delivery over STARTTLS logged as %v; want delivered 1, tls true, TLSv1.3, tls_verified false (self-signed)", e)
	}
	line := p.waitLog(10*time.Second, "TLS connection established from")
	t.Logf("postfix: %s", line)
	if !strings.Contains(line, "TLSv1.3") {
		t.Errorf("postfix's TLS line does not say TLSv1.3: %s", line)
	}
	checkPostfixCopy(t, files[0], idTLS, "with ESMTPS", interopMessage("to postfix over tls", "to-postfix-over-tls@sender.test"))

	// 2. TLS off in Postfix: plaintext, and the log says why.
	p.restart(map[string]string{"smtpd_tls_security_level": "none"})
	idPlain := send("to postfix in plaintext")
	files = waitMaildir(t, mailbox, 2, 60*time.Second)
	e = attempt(idPlain)
	if e["delivered"] != float64(1) || e["tls"] != false || e["tls_fallback"] != "starttls not offered" {
		t.Errorf("delivery without STARTTLS logged as %v; want delivered 1, tls false, tls_fallback \"starttls not offered\"", e)
	}
	for _, f := range files {
		if raw, _ := os.ReadFile(f); strings.Contains(string(raw), "id "+idPlain) {
			checkPostfixCopy(t, f, idPlain, "with ESMTP id", interopMessage("to postfix in plaintext", "to-postfix-in-plaintext@sender.test"))
		}
	}
	if n := strings.Count(p.log(), "TLS connection established from"); n != 1 {
		t.Errorf("postfix logged %d TLS connections, want only the first delivery's", n)
	}
}

// checkPostfixCopy checks a message Postfix's virtual(8) stored: LF line
// ends (Postfix stores lines, not CRLF), then exactly the fields prepended
// on the way — Return-Path, X-Original-To, Delivered-To (virtual),
// Received (Postfix's smtpd, with the given protocol), Received (ours,
// with our queue ID) — and then the original, byte for byte once CRLF is
// restored.
func checkPostfixCopy(t *testing.T, path, id, with string, orig []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "\r") {
		t.Fatalf("postfix stored a CR; expected LF line ends:\n%q", raw)
	}
	crlf := []byte(strings.ReplaceAll(string(raw), "\n", "\r\n"))
	_, rest := stripFields(t, crlf,
		[]string{"Return-Path", "<alice@sender.test>"},
		[]string{"X-Original-To", "bob@example.test"},
		[]string{"Delivered-To", "bob@example.test"},
		[]string{"Received", "(Postfix)", with},
		[]string{"Received", "(caddy-smtp)", "id " + id},
	)
	sameBytes(t, "message stored by postfix", rest, orig)
}
