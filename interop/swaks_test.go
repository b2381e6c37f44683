package interop

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// submissionGateway is a quickstart-style gateway for the client matrix:
// one server with a STARTTLS listener and an implicit TLS listener, AUTH
// with an accounts provider whose hash comes from `caddy hash-password`,
// and mail for example.test into a Maildir.
type submissionGateway struct {
	*gateway
	starttls, implicit string // listener addresses
	roots              string // the internal CA root (PEM file)
	password           string // of both accounts
}

// The accounts: one hash of each kind `caddy hash-password` makes. bcrypt
// at cost 10 instead of the default 14 keeps the race-enabled gateway
// from spending seconds on every login.
const (
	bcryptUser = "alice"
	argonUser  = "bob"
)

const maxMessageSize = 24 << 20 // 25165824 octets

func startSubmissionGateway(t *testing.T) *submissionGateway {
	t.Helper()
	g := newGateway(t)
	s := &submissionGateway{
		gateway:  g,
		starttls: loopback(freePort(t)),
		implicit: loopback(freePort(t)),
		password: "correct horse battery staple",
	}
	hash := func(args ...string) string {
		res := runTool(t, time.Minute, nil, nil, caddyBin, append([]string{"hash-password", "--plaintext", s.password}, args...)...)
		h := strings.TrimSpace(res.out)
		if res.code != 0 || !strings.HasPrefix(h, "$") {
			t.Fatalf("caddy hash-password %s: exit %d: %s", strings.Join(args, " "), res.code, res.out)
		}
		return h
	}
	g.start(g.config(map[string]any{
		"hostname": "localhost",
		"servers": map[string]any{"submission": map[string]any{
			"listen": []any{
				map[string]any{"address": s.starttls},
				map[string]any{"address": s.implicit, "tls": "implicit"},
			},
			"max_message_size": maxMessageSize,
			"authentication": map[string]any{
				"provider": "accounts",
				"accounts": []any{
					map[string]any{"username": bcryptUser, "password": hash("--algorithm", "bcrypt", "--bcrypt-cost", "10")},
					map[string]any{"username": argonUser, "password": hash("--algorithm", "argon2id")},
				},
			},
		}},
	}, nil), s.starttls, s.implicit)
	s.roots = g.rootPath()
	waitTLSReady(t, s.starttls, "localhost", poolFromFile(t, s.roots), 30*time.Second)
	return s
}

func (s *submissionGateway) tlsConfig(t *testing.T) *tls.Config {
	return &tls.Config{ServerName: "localhost", RootCAs: poolFromFile(t, s.roots)}
}

// swaks runs swaks against the gateway with the common options (verified
// TLS against the internal CA) and the given ones.
func (s *submissionGateway) swaks(t *testing.T, args ...string) toolResult {
	t.Helper()
	base := []string{"--helo", "client.sender.test", "--from", "sender@sender.test",
		"--tls-verify", "--tls-ca-path", s.roots, "--tls-sni", "localhost"}
	return swaks(t, append(base, args...)...)
}

// stored waits for the one message of a recipient and returns it.
func (s *submissionGateway) stored(t *testing.T, local string) []byte {
	t.Helper()
	files := waitMaildir(t, s.maildir("example.test", local), 1, 60*time.Second)
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// sendRaw sends one message over STARTTLS with the raw client, after
// checking that the extension is offered: MAIL FROM:<from> params, RCPT
// TO:<local@example.test>, DATA.
func (s *submissionGateway) sendRaw(t *testing.T, ext, from, params, local string, msg []byte) {
	t.Helper()
	c := dialSMTP(t, s.starttls, nil)
	c.cmd("EHLO client.sender.test", 250)
	c.startTLS(s.tlsConfig(t))
	if ehlo := c.cmd("EHLO client.sender.test", 250); !strings.Contains(ehlo, ext) {
		t.Fatalf("%s not offered: %q", ext, ehlo)
	}
	c.cmd("MAIL FROM:<"+from+"> "+params, 250)
	c.cmd("RCPT TO:<"+local+"@example.test>", 250)
	if code, text := c.data(msg); code != 250 {
		t.Fatalf("DATA: %s", text)
	}
	c.cmd("QUIT", 221)
}

// ourFields are the fields our server and maildir prepend.
func ourFields(from, rcpt string, received ...string) [][]string {
	return [][]string{
		{"Return-Path", "<" + from + ">"},
		{"Delivered-To", rcpt},
		append([]string{"Received", "(caddy-smtp)", "by localhost"}, received...),
	}
}

// ok fails unless swaks exited 0 and its transcript has every want.
func ok(t *testing.T, res toolResult, want ...string) {
	t.Helper()
	if res.code != 0 {
		t.Fatalf("swaks exit %d:\n%s", res.code, res.out)
	}
	for _, w := range want {
		if !strings.Contains(res.out, w) {
			t.Fatalf("swaks transcript lacks %q:\n%s", w, res.out)
		}
	}
}

// TestClientMatrix runs swaks (and a raw client for what swaks cannot
// express) against one gateway: STARTTLS, implicit TLS, AUTH PLAIN and
// LOGIN, pipelining, 8-bit data, SMTPUTF8, BDAT, a 20 MB message, the
// size limit, and a client that goes away mid-DATA.
func TestClientMatrix(t *testing.T) {
	requireTool(t, "swaks")
	s := startSubmissionGateway(t)

	t.Run("STARTTLS", func(t *testing.T) {
		res := s.swaks(t, "--server", s.starttls, "--tls", "--to", "starttls@example.test")
		ok(t, res, "TLS started", "250 2.0.0 OK queued")
		stripFields(t, s.stored(t, "starttls"), ourFields("sender@sender.test", "starttls@example.test",
			"(using TLSv1.3 with cipher", "with ESMTPS")...)
	})

	t.Run("implicit TLS", func(t *testing.T) {
		res := s.swaks(t, "--server", s.implicit, "--tls-on-connect", "--to", "implicit@example.test")
		ok(t, res, "TLS started", "250 2.0.0 OK queued")
		stripFields(t, s.stored(t, "implicit"), ourFields("sender@sender.test", "implicit@example.test",
			"(using TLSv1.3 with cipher", "with ESMTPS")...)
	})

	for _, c := range []struct{ mech, user string }{
		{"PLAIN", bcryptUser}, {"LOGIN", bcryptUser}, {"PLAIN", argonUser}, {"LOGIN", argonUser},
	} {
		t.Run("AUTH "+c.mech+" "+c.user, func(t *testing.T) {
			local := "auth-" + strings.ToLower(c.mech) + "-" + c.user
			res := s.swaks(t, "--server", s.starttls, "--tls", "--auth", c.mech,
				"--auth-user", c.user, "--auth-password", s.password, "--to", local+"@example.test")
			ok(t, res, "AUTH "+c.mech, "235 ", "250 2.0.0 OK queued")
			stripFields(t, s.stored(t, local), ourFields("sender@sender.test", local+"@example.test",
				"(using TLSv1.3 with cipher", "with ESMTPSA")...)
		})
	}

	t.Run("AUTH refused", func(t *testing.T) {
		// No AUTH before TLS: swaks finds none offered and gives up.
		res := s.swaks(t, "--server", s.starttls, "--auth", "PLAIN",
			"--auth-user", bcryptUser, "--auth-password", s.password, "--to", "noauth@example.test")
		if res.code == 0 || strings.Contains(res.out, "235 ") {
			t.Fatalf("AUTH before STARTTLS succeeded:\n%s", res.out)
		}
		// A wrong password over TLS: 535.
		res = s.swaks(t, "--server", s.starttls, "--tls", "--auth", "PLAIN",
			"--auth-user", bcryptUser, "--auth-password", "wrong", "--to", "noauth@example.test")
		if res.code == 0 || !strings.Contains(res.out, "535 ") {
			t.Fatalf("a wrong password was not refused with 535:\n%s", res.out)
		}
	})

	t.Run("PIPELINING", func(t *testing.T) {
		res := s.swaks(t, "--server", s.starttls, "--tls", "--pipeline",
			"--to", "pipeline@example.test,pipeline2@example.test")
		ok(t, res, "250 2.0.0 OK queued")
		// Pipelined, swaks writes MAIL, both RCPTs and DATA before it
		// reads the first of their replies.
		if !regexpFind(`(?m)^ ~> MAIL FROM:.*\n ~> RCPT TO:<pipeline@.*\n ~> RCPT TO:<pipeline2@.*\n ~> DATA`, res.out) {
			t.Fatalf("swaks did not pipeline:\n%s", res.out)
		}
		s.stored(t, "pipeline")
		s.stored(t, "pipeline2")
	})

	t.Run("8-bit body with swaks", func(t *testing.T) {
		// swaks has no option for MAIL parameters (BODY=8BITMIME): this
		// sends 8-bit text undeclared, as many clients do; the declared
		// form is the raw case below.
		body := "Grüße aus Köln — ½ €, naïve café"
		res := s.swaks(t, "--server", s.starttls, "--tls", "--to", "swaks8bit@example.test",
			"--header", "Content-Type: text/plain; charset=utf-8", "--body", body)
		ok(t, res, "250 2.0.0 OK queued")
		if got := s.stored(t, "swaks8bit"); !bytes.Contains(got, []byte(body)) {
			t.Fatalf("8-bit body not stored intact:\n%s", got)
		}
	})

	t.Run("BODY=8BITMIME", func(t *testing.T) {
		orig := []byte("From: <sender@sender.test>\r\nTo: <mime8@example.test>\r\nSubject: 8bit\r\n" +
			"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n" +
			"Content-Transfer-Encoding: 8bit\r\n\r\n" +
			"Latin-1 bytes: \xe9\xe8\xfc\xdf \xa3\xa9\r\nUTF-8 too: Grüße\r\n.starts with a dot\r\n")
		s.sendRaw(t, "8BITMIME", "sender@sender.test", "BODY=8BITMIME", "mime8", orig)
		_, rest := stripFields(t, s.stored(t, "mime8"), ourFields("sender@sender.test", "mime8@example.test", "with ESMTPS")...)
		sameBytes(t, "8BITMIME message", rest, orig)
	})

	t.Run("SMTPUTF8", func(t *testing.T) {
		// swaks (20201014) cannot send the SMTPUTF8 parameter: raw dialog.
		orig := []byte("From: Élise <élise@sender.test>\r\nTo: José <josé@example.test>\r\n" +
			"Subject: ¡Hola! 你好\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
			"Content-Transfer-Encoding: 8bit\r\n\r\nInternationalised addresses: élise → josé\r\n")
		s.sendRaw(t, "SMTPUTF8", "élise@sender.test", "SMTPUTF8 BODY=8BITMIME", "josé", orig)
		_, rest := stripFields(t, s.stored(t, "josé"),
			ourFields("élise@sender.test", "josé@example.test", "with UTF8SMTPS")...)
		sameBytes(t, "SMTPUTF8 message", rest, orig)
	})

	t.Run("BDAT", func(t *testing.T) {
		// swaks has no CHUNKING: raw dialog. The chunks split a CRLF and
		// carry a line that is a lone dot, which BDAT must not interpret.
		orig := []byte("From: <sender@sender.test>\r\nTo: <bdat@example.test>\r\nSubject: chunks\r\n\r\n" +
			"first chunk\r\n.\r\n..two dots stay two\r\nsecond line\r\nthird line\r\n")
		cut1 := bytes.Index(orig, []byte("first chunk\r")) + len("first chunk\r")
		cut2 := bytes.Index(orig, []byte("second line")) + 3
		chunks := [][]byte{orig[:cut1], orig[cut1:cut2], orig[cut2:]}
		c := dialSMTP(t, s.implicit, s.tlsConfig(t))
		if ehlo := c.cmd("EHLO client.sender.test", 250); !strings.Contains(ehlo, "CHUNKING") {
			t.Fatalf("CHUNKING not offered: %q", ehlo)
		}
		c.cmd("MAIL FROM:<sender@sender.test>", 250)
		c.cmd("RCPT TO:<bdat@example.test>", 250)
		for i, ch := range chunks {
			last := ""
			if i == len(chunks)-1 {
				last = " LAST"
			}
			c.write([]byte(fmt.Sprintf("BDAT %d%s\r\n", len(ch), last)))
			c.write(ch)
			c.expect(250)
		}
		c.cmd("QUIT", 221)
		_, rest := stripFields(t, s.stored(t, "bdat"), ourFields("sender@sender.test", "bdat@example.test", "with ESMTPS")...)
		sameBytes(t, "BDAT message", rest, orig)
	})

	t.Run("20 MB message", func(t *testing.T) {
		orig := bigMessage("big@example.test", 20_000_000)
		start := time.Now()
		res := s.swaks(t, "--server", s.starttls, "--tls", "--to", "big@example.test",
			"--data", "@"+swaksData(t, orig), "--suppress-data")
		ok(t, res, "250 2.0.0 OK queued")
		t.Logf("%d octets sent by swaks in %s", len(orig), time.Since(start).Round(time.Millisecond))
		_, rest := stripFields(t, s.stored(t, "big"), ourFields("sender@sender.test", "big@example.test", "with ESMTPS")...)
		sameBytes(t, "20 MB message", rest, orig)
	})

	t.Run("over max_message_size", func(t *testing.T) {
		c := dialSMTP(t, s.implicit, s.tlsConfig(t))
		ehlo := c.cmd("EHLO client.sender.test", 250)
		if !strings.Contains(ehlo, "SIZE "+strconv.Itoa(maxMessageSize)) {
			t.Fatalf("SIZE %d not advertised: %q", maxMessageSize, ehlo)
		}
		// Declared too big: refused at MAIL.
		if text := c.cmd(fmt.Sprintf("MAIL FROM:<sender@sender.test> SIZE=%d", maxMessageSize+1), 552); !strings.Contains(text, "5.3.4") {
			t.Fatalf("MAIL with SIZE over the limit: %q, want 552 5.3.4", text)
		}
		c.cmd("QUIT", 221)

		// Undeclared (swaks sends no SIZE): refused after the data.
		res := s.swaks(t, "--server", s.starttls, "--tls", "--to", "toobig@example.test",
			"--data", "@"+swaksData(t, bigMessage("toobig@example.test", maxMessageSize+1<<20)), "--suppress-data")
		if res.code == 0 || !regexpFind(`(?m)^<~\* +552 5\.3\.4`, res.out) {
			t.Fatalf("an oversized message was not refused with 552 5.3.4:\n%s", res.out)
		}
		assertNoMail(t, s.gateway, s.starttls, "toobig")
	})

	t.Run("quit mid-DATA", func(t *testing.T) {
		c := dialSMTP(t, s.starttls, nil)
		c.cmd("EHLO client.sender.test", 250)
		c.startTLS(s.tlsConfig(t))
		c.cmd("EHLO client.sender.test", 250)
		c.cmd("MAIL FROM:<sender@sender.test>", 250)
		c.cmd("RCPT TO:<midquit@example.test>", 250)
		c.cmd("DATA", 354)
		c.write([]byte("Subject: never finished\r\n\r\nhalf a message\r\nQUIT\r\n"))
		c.c.Close()
		assertNoMail(t, s.gateway, s.starttls, "midquit")
	})

	// Everything accepted was delivered: the queue holds nothing, and no
	// half-received body was left behind in the spool's tmp/.
	testutil.Eventually(t, 30*time.Second, "an empty queue and spool tmp/", func() bool {
		left, _ := filepath.Glob(filepath.Join(s.spool, "tmp", "*"))
		return len(left) == 0 && s.gateway.queueLen() == 0
	})
}

// assertNoMail checks that nothing was queued or delivered for a
// recipient that must get nothing. A later message to the same Maildir is
// the barrier: once it has arrived, a message queued before it would have
// too.
func assertNoMail(t *testing.T, g *gateway, addr, local string) {
	t.Helper()
	c := dialSMTP(t, addr, nil)
	c.cmd("EHLO client.sender.test", 250)
	c.cmd("MAIL FROM:<sender@sender.test>", 250)
	c.cmd("RCPT TO:<"+local+"@example.test>", 250)
	if code, text := c.data([]byte("Subject: barrier\r\n\r\nbarrier\r\n")); code != 250 {
		t.Fatalf("barrier message: %s", text)
	}
	c.cmd("QUIT", 221)
	files := waitMaildir(t, g.maildir("example.test", local), 1, 60*time.Second)
	raw, _ := os.ReadFile(files[0])
	if !bytes.Contains(raw, []byte("Subject: barrier")) {
		t.Fatalf("a message for %s was delivered:\n%.500s", local, raw)
	}
	testutil.Eventually(t, 30*time.Second, "no partial body in the spool", func() bool {
		left, _ := filepath.Glob(filepath.Join(g.spool, "tmp", "*"))
		return len(left) == 0
	})
}

// regexpFind reports whether the pattern matches s.
func regexpFind(pattern, s string) bool {
	return regexp.MustCompile(pattern).MatchString(s)
}

// bigMessage returns a message of about size octets: headers and lines of
// 76 pseudo-random base64 characters (deterministic).
func bigMessage(to string, size int) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	rng := rand.New(rand.NewPCG(1, uint64(size)))
	var b bytes.Buffer
	b.Grow(size + 100)
	fmt.Fprintf(&b, "From: <sender@sender.test>\r\nTo: <%s>\r\nSubject: %d octets\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"+
		"Content-Transfer-Encoding: base64\r\n\r\n", to, size)
	line := make([]byte, 76)
	for b.Len() < size {
		for i := range line {
			line[i] = alphabet[rng.IntN(len(alphabet))]
		}
		b.Write(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
