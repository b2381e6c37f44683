package dsn_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/dsn"
	"github.com/caddy-smtp/caddy-smtp/internal/dsntest"
)

var (
	now     = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	arrived = time.Date(2026, 3, 2, 9, 15, 30, 0, time.FixedZone("", -5*3600))
)

// origHeader and origMessage are an original message as the spool keeps it.
const origHeader = "Received: from client.example.com (client.example.com [192.0.2.1])\r\n" +
	"\tby mx.example.org with ESMTPS id ABCDEF; Mon, 02 Mar 2026 09:15:30 -0500\r\n" +
	"From: Alice <alice@example.com>\r\n" +
	"To: bob@example.net, carol@example.net\r\n" +
	"Subject: Quarterly numbers\r\n" +
	"Message-ID: <orig-1@example.com>\r\n"

const origMessage = origHeader + "\r\n" + "Hi Bob,\r\n\r\nthe numbers are attached.\r\n"

// baseReport returns a failure report about two recipients, one with ORCPT.
func baseReport() *dsn.Report {
	return &dsn.Report{
		ReportingMTA:    "mx.example.org",
		EnvelopeID:      "QQ314159",
		ArrivalDate:     arrived,
		ReceivedFromMTA: "dns; client.example.com",
		Sender:          "alice@example.com",
		MessageID:       "dsn-1@mx.example.org",
		Date:            now,
		Recipients: []dsn.Recipient{
			{
				Final:       "bob@example.net",
				Original:    "rfc822;robert@example.com",
				Action:      dsn.Failed,
				Status:      "5.1.1",
				RemoteMTA:   "dns; mx1.example.net",
				Diagnostic:  "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
				LastAttempt: now,
			},
			{
				Final:       "carol@example.net",
				Action:      dsn.Failed,
				Status:      "5.2.2",
				RemoteMTA:   "dns; mx1.example.net",
				Diagnostic:  "smtp; 552 5.2.2 mailbox full",
				LastAttempt: now.Add(-time.Minute),
			},
		},
	}
}

// write runs WriteInfo and checks that the output is well-formed mail.
func write(t *testing.T, r *dsn.Report, original io.Reader, maxFullSize int64) ([]byte, dsn.Info) {
	t.Helper()
	var buf bytes.Buffer
	info, err := dsn.WriteInfo(&buf, r, original, maxFullSize)
	if err != nil {
		t.Fatalf("WriteInfo: %v", err)
	}
	checkLines(t, buf.Bytes())
	return buf.Bytes(), info
}

// checkLines checks that every line ends with CRLF, that there is no other
// CR or LF, and that no line is longer than 998 octets.
func checkLines(t *testing.T, msg []byte) {
	t.Helper()
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Errorf("message does not end with CRLF")
	}
	for i, line := range bytes.SplitAfter(msg, []byte("\r\n")) {
		body := bytes.TrimSuffix(line, []byte("\r\n"))
		if bytes.ContainsAny(body, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, body)
		}
		if len(body) > 998 {
			t.Errorf("line %d is %d octets long", i+1, len(body))
		}
	}
}

// stdParts reads msg with net/mail and mime/multipart alone and returns the
// top-level header and, for each part, its header and decoded content.
func stdParts(t *testing.T, msg []byte) (mail.Header, []textprotoPart) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("net/mail: %v", err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var parts []textprotoPart
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		parts = append(parts, textprotoPart{contentType: ct, cte: p.Header.Get("Content-Transfer-Encoding"), body: body})
	}
	return m.Header, parts
}

type textprotoPart struct {
	contentType, cte string
	body             []byte
}

func partTypes(parts []textprotoPart) string {
	var types []string
	for _, p := range parts {
		types = append(types, p.contentType)
	}
	return strings.Join(types, ", ")
}

func parse(t *testing.T, msg []byte) *dsntest.Parsed {
	t.Helper()
	p, err := dsntest.Parse(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

// compareReport checks that the parsed report says what was written. The
// inputs use the canonical forms ("dns; ...", "smtp; ...") so that they
// come back unchanged.
func compareReport(t *testing.T, got, want *dsn.Report) {
	t.Helper()
	if got.ReportingMTA != want.ReportingMTA || got.EnvelopeID != want.EnvelopeID ||
		got.ReceivedFromMTA != want.ReceivedFromMTA || got.Sender != want.Sender ||
		got.MessageID != want.MessageID || got.UTF8 != want.UTF8 {
		t.Errorf("per-message fields:\n got %+v\nwant %+v", got, want)
	}
	if !got.ArrivalDate.Equal(want.ArrivalDate) || !got.Date.Equal(want.Date) {
		t.Errorf("dates: got arrival %v date %v, want %v %v", got.ArrivalDate, got.Date, want.ArrivalDate, want.Date)
	}
	if len(got.Recipients) != len(want.Recipients) {
		t.Fatalf("got %d recipients, want %d", len(got.Recipients), len(want.Recipients))
	}
	for i, g := range got.Recipients {
		w := want.Recipients[i]
		if w.Status == "" {
			w.Status = dsn.DefaultStatus(w.Action)
		}
		if w.Action != dsn.Delayed {
			w.WillRetryUntil = time.Time{}
		}
		if g.Final != w.Final || g.Original != w.Original || g.Action != w.Action || g.Status != w.Status ||
			g.RemoteMTA != w.RemoteMTA || g.Diagnostic != w.Diagnostic ||
			!g.LastAttempt.Equal(w.LastAttempt) || !g.WillRetryUntil.Equal(w.WillRetryUntil) {
			t.Errorf("recipient %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestRoundTripFailed(t *testing.T) {
	r := baseReport()
	out, info := write(t, r, strings.NewReader(origMessage), 1<<20)

	hdr, parts := stdParts(t, out)
	if got := partTypes(parts); got != "text/plain, message/delivery-status, text/rfc822-headers" {
		t.Errorf("parts: %s", got)
	}
	for name, want := range map[string]string{
		"From":           `"Mail Delivery System" <MAILER-DAEMON@mx.example.org>`,
		"To":             "<alice@example.com>",
		"Subject":        "Undelivered Mail Returned to Sender",
		"Auto-Submitted": "auto-replied",
		"MIME-Version":   "1.0",
		"Message-ID":     "<dsn-1@mx.example.org>",
		"Date":           "Mon, 02 Mar 2026 10:00:00 +0000",
	} {
		if got := hdr.Get(name); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if hdr.Get("Content-Transfer-Encoding") != "" {
		t.Errorf("an ASCII DSN has a Content-Transfer-Encoding")
	}
	if info != (dsn.Info{MessageID: "dsn-1@mx.example.org", Subject: "Undelivered Mail Returned to Sender", Returned: dsn.ReturnedHeaders}) {
		t.Errorf("info: %+v", info)
	}

	p := parse(t, out)
	if p.MediaType != "multipart/report" || p.Params["report-type"] != "delivery-status" || p.StatusType != "message/delivery-status" {
		t.Errorf("types: %s %v %s", p.MediaType, p.Params, p.StatusType)
	}
	want := *r
	want.Return = "HDRS"
	compareReport(t, &p.Report, &want)
	if p.OriginalType != "text/rfc822-headers" || string(p.Original) != origHeader {
		t.Errorf("original part %s:\n%q\nwant\n%q", p.OriginalType, p.Original, origHeader)
	}
	if len(p.MessageFields) != 4 || len(p.RecipientFields) != 2 {
		t.Errorf("field groups: %d per-message fields, %d recipients", len(p.MessageFields), len(p.RecipientFields))
	}
	for _, s := range []string{
		"<bob@example.net> (originally addressed to <robert@example.com>): failed, status 5.1.1",
		"Remote server: mx1.example.net",
		"Reason: 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
		"<carol@example.net>: failed, status 5.2.2",
		"Reason: 552 5.2.2 mailbox full",
		"The header of your message is attached.",
	} {
		if !strings.Contains(flat(p.Text), s) {
			t.Errorf("text lacks %q:\n%s", s, p.Text)
		}
	}
}

func TestRoundTripDelayed(t *testing.T) {
	r := baseReport()
	r.Recipients = []dsn.Recipient{{
		Final:          "bob@example.net",
		Action:         dsn.Delayed,
		Status:         "4.4.1",
		Diagnostic:     "x-local; connection to mx1.example.net timed out",
		LastAttempt:    now,
		WillRetryUntil: now.Add(96 * time.Hour),
	}}
	out, info := write(t, r, nil, 1<<20)
	hdr, parts := stdParts(t, out)
	if got := partTypes(parts); got != "text/plain, message/delivery-status" {
		t.Errorf("parts: %s", got)
	}
	if hdr.Get("Subject") != "Delayed Mail (still being retried)" || info.Returned != dsn.ReturnedNothing {
		t.Errorf("subject %q, returned %q", hdr.Get("Subject"), info.Returned)
	}
	if !bytes.Contains(out, []byte("\r\nWill-Retry-Until: Fri, 06 Mar 2026 10:00:00 +0000\r\n")) {
		t.Errorf("no Will-Retry-Until field:\n%s", out)
	}
	p := parse(t, out)
	compareReport(t, &p.Report, r)
	if !strings.Contains(p.Text, "Will retry until: Fri, 06 Mar 2026 10:00:00 +0000") {
		t.Errorf("text lacks the retry time:\n%s", p.Text)
	}
}

func TestRoundTripSuccess(t *testing.T) {
	for _, tc := range []struct {
		action  dsn.Action
		subject string
	}{
		{dsn.Delivered, "Successful Mail Delivery Report"},
		{dsn.Relayed, "Relayed Mail Delivery Report"},
		{dsn.Expanded, "Successful Mail Delivery Report"},
	} {
		t.Run(string(tc.action), func(t *testing.T) {
			r := baseReport()
			r.Return = "FULL" // content is returned with failures only
			r.Recipients = []dsn.Recipient{{
				Final:          "bob@example.net",
				Original:       "rfc822;bob@example.net",
				Action:         tc.action,
				RemoteMTA:      "dns; mx1.example.net",
				Diagnostic:     "smtp; 250 2.0.0 Ok: queued as 4Fx",
				LastAttempt:    now,
				WillRetryUntil: now.Add(time.Hour), // not written for this action
			}}
			out, info := write(t, r, strings.NewReader(origMessage), 1<<20)
			if info.Subject != tc.subject || info.Returned != dsn.ReturnedHeaders {
				t.Errorf("info: %+v", info)
			}
			if bytes.Contains(out, []byte("Will-Retry-Until")) {
				t.Errorf("Will-Retry-Until written for %s", tc.action)
			}
			p := parse(t, out)
			if p.Header.Get("Subject") != tc.subject {
				t.Errorf("subject %q", p.Header.Get("Subject"))
			}
			want := *r
			want.Return = "HDRS"
			compareReport(t, &p.Report, &want)
			if p.Report.Recipients[0].Status != "2.0.0" {
				t.Errorf("default status %q", p.Report.Recipients[0].Status)
			}
		})
	}
}

func TestReturnFull(t *testing.T) {
	// Any octets a well-formed 8bit message may hold, Latin-1 included.
	original := origHeader + "\r\n" + "caf\xe9 \xff\x01\x7f tab\there\r\n.\r\n..dots\r\n\r\n" + "no final newline"
	r := baseReport()
	r.Return = "full"
	out, info := write(t, r, strings.NewReader(original), int64(len(original)))
	if info.Returned != dsn.ReturnedFull || !info.EightBit || info.Global {
		t.Errorf("info: %+v", info)
	}
	hdr, parts := stdParts(t, out)
	if got := partTypes(parts); got != "text/plain, message/delivery-status, message/rfc822" {
		t.Fatalf("parts: %s", got)
	}
	if !bytes.Equal(parts[2].body, []byte(original)) || parts[2].cte != "8bit" {
		t.Errorf("returned message (%s):\n%q\nwant\n%q", parts[2].cte, parts[2].body, original)
	}
	if hdr.Get("Content-Transfer-Encoding") != "8bit" {
		t.Errorf("top-level Content-Transfer-Encoding %q", hdr.Get("Content-Transfer-Encoding"))
	}
	p := parse(t, out)
	if p.OriginalType != "message/rfc822" || !bytes.Equal(p.Original, []byte(original)) || p.Report.Return != "FULL" {
		t.Errorf("parsed original %s %q", p.OriginalType, p.Original)
	}
	if !strings.Contains(p.Text, "A copy of your message is attached.") {
		t.Errorf("text:\n%s", p.Text)
	}
}

func TestReturnFullTooLarge(t *testing.T) {
	r := baseReport()
	r.Return = "FULL"
	out, info := write(t, r, strings.NewReader(origMessage), int64(len(origMessage)-1))
	if info.Returned != dsn.ReturnedHeaders {
		t.Errorf("info: %+v", info)
	}
	p := parse(t, out)
	if p.OriginalType != "text/rfc822-headers" || string(p.Original) != origHeader {
		t.Errorf("original part %s:\n%q", p.OriginalType, p.Original)
	}
	if !strings.Contains(flat(p.Text), "too large to return in full") {
		t.Errorf("text:\n%s", p.Text)
	}

	// maxFullSize 0 never returns the whole message.
	out, info = write(t, r, strings.NewReader(origMessage), 0)
	if info.Returned != dsn.ReturnedHeaders || !bytes.Contains(out, []byte("text/rfc822-headers")) {
		t.Errorf("maxFullSize 0: %+v", info)
	}
}

func TestReturnHeaders(t *testing.T) {
	for _, ret := range []string{"", "HDRS", "hdrs"} {
		r := baseReport()
		r.Return = ret
		out, info := write(t, r, strings.NewReader(origMessage), 1<<20)
		_, parts := stdParts(t, out)
		if info.Returned != dsn.ReturnedHeaders || parts[2].contentType != "text/rfc822-headers" ||
			string(parts[2].body) != origHeader {
			t.Errorf("RET=%q: %s\n%q", ret, parts[2].contentType, parts[2].body)
		}
	}
}

func TestMalformedOriginal(t *testing.T) {
	long := "X-Long: " + strings.Repeat("y", 1500) + " end"
	hline := "X-A: " + strings.Repeat("a", 95) + "\r\n"
	for name, tc := range map[string]struct {
		ret, original, header string
		returned              dsn.Returned
	}{
		"bare LF": {
			"FULL", "Subject: a\nFrom: b@example.com\n\nbody\n",
			"Subject: a\r\nFrom: b@example.com\r\n", dsn.ReturnedHeaders,
		},
		"bare CR": {
			"FULL", "Subject: a\rb\r\n\r\nbody\r\n",
			"Subject: a b\r\n", dsn.ReturnedHeaders,
		},
		"NUL in body": {
			"FULL", origHeader + "\r\nbody\x00\r\n",
			origHeader, dsn.ReturnedHeaders,
		},
		"long header line": {
			"FULL", long + "\r\nSubject: x\r\n\r\nbody\r\n",
			"X-Long: " + strings.Repeat("y", 990) + "\r\n " + strings.Repeat("y", 510) + " end\r\nSubject: x\r\n", dsn.ReturnedHeaders,
		},
		"long utf-8 field name": {
			"HDRS", "X" + strings.Repeat("ü", 700) + ": v\r\n\r\nbody\r\n",
			"X" + strings.Repeat("ü", 498) + "\r\n " + strings.Repeat("ü", 202) + ": v\r\n", dsn.ReturnedHeaders,
		},
		"no body":         {"HDRS", "Subject: only a header", "Subject: only a header\r\n", dsn.ReturnedHeaders},
		"no body, full":   {"FULL", "Subject: only a header", "Subject: only a header", dsn.ReturnedFull},
		"no header":       {"HDRS", "\r\nbody\r\n", "", dsn.ReturnedNothing},
		"empty":           {"HDRS", "", "", dsn.ReturnedNothing},
		"empty, full":     {"FULL", "", "", dsn.ReturnedNothing},
		"header size cap": {"HDRS", strings.Repeat(hline, dsn.MaxHeaderSize/len(hline)+10), strings.Repeat(hline, dsn.MaxHeaderSize/len(hline)), dsn.ReturnedHeaders},
	} {
		t.Run(name, func(t *testing.T) {
			r := baseReport()
			r.Return = tc.ret
			out, info := write(t, r, strings.NewReader(tc.original), 1<<20)
			p := parse(t, out)
			if info.Returned != tc.returned || string(p.Original) != tc.header {
				t.Errorf("%s %s:\n%s\nwant\n%s", info.Returned, p.OriginalType, short(string(p.Original)), short(tc.header))
			}
		})
	}
}

func TestUTF8(t *testing.T) {
	r := baseReport()
	r.Sender = "jörg@bücher.example"
	r.Return = "FULL"
	r.Recipients[0].Final = "用户@example.net"
	r.Recipients[0].Original = "utf-8;用户@example.net"
	r.Recipients[0].Diagnostic = "smtp; 550 5.1.1 用户不存在"
	original := "From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n\r\nHallo\r\n"
	want := *r
	want.UTF8 = true

	out, info := write(t, r, strings.NewReader(original), 1<<20)
	if !info.Global || !info.SMTPUTF8 || !info.EightBit || info.Returned != dsn.ReturnedFull {
		t.Errorf("info: %+v", info)
	}
	hdr, parts := stdParts(t, out)
	if got := partTypes(parts); got != "text/plain, message/global-delivery-status, message/global" {
		t.Errorf("parts: %s", got)
	}
	if _, params, _ := mime.ParseMediaType(hdr.Get("Content-Type")); params["report-type"] != "global-delivery-status" {
		t.Errorf("Content-Type %q", hdr.Get("Content-Type"))
	}
	for _, s := range []string{
		"To: <jörg@bücher.example>\r\n",
		"Content-Type: text/plain; charset=utf-8\r\n",
		"Original-Recipient: utf-8;用户@example.net\r\n",
		"Final-Recipient: utf-8; 用户@example.net\r\n",
		"Final-Recipient: rfc822; carol@example.net\r\n",
		"Diagnostic-Code: smtp; 550 5.1.1 用户不存在\r\n",
	} {
		if !bytes.Contains(out, []byte(s)) {
			t.Errorf("output lacks %q", s)
		}
	}
	p := parse(t, out)
	want.Return = "FULL"
	compareReport(t, &p.Report, &want)
	if p.OriginalType != "message/global" || string(p.Original) != original {
		t.Errorf("original %s %q", p.OriginalType, p.Original)
	}

	// Headers only: message/global-headers.
	r.Return = "HDRS"
	out, _ = write(t, r, strings.NewReader(original), 1<<20)
	if p := parse(t, out); p.OriginalType != "message/global-headers" ||
		string(p.Original) != "From: Jörg <jörg@bücher.example>\r\nSubject: Grüße\r\n" {
		t.Errorf("original %s %q", p.OriginalType, p.Original)
	}
}

func TestGlobalTriggers(t *testing.T) {
	for name, tc := range map[string]struct {
		edit     func(*dsn.Report)
		original string
		global   bool
		smtputf8 bool
	}{
		"ascii":               {func(*dsn.Report) {}, origMessage, false, false},
		"SMTPUTF8 original":   {func(r *dsn.Report) { r.UTF8 = true }, origMessage, true, false},
		"utf-8 recipient":     {func(r *dsn.Report) { r.Recipients[1].Final = "josé@example.net" }, origMessage, true, false},
		"utf-8 ORCPT":         {func(r *dsn.Report) { r.Recipients[1].Original = "rfc822;josé@example.net" }, origMessage, true, false},
		"utf-8 header":        {func(*dsn.Report) {}, "Subject: Grüße\r\n\r\nx\r\n", true, false},
		"latin-1 header":      {func(*dsn.Report) {}, "Subject: Gr\xfc\xdfe\r\n\r\nx\r\n", false, false},
		"utf-8 sender":        {func(r *dsn.Report) { r.Sender = "josé@example.com" }, origMessage, true, true},
		"utf-8 reporting MTA": {func(r *dsn.Report) { r.ReportingMTA = "mx.bücher.example" }, origMessage, false, true},
	} {
		t.Run(name, func(t *testing.T) {
			r := baseReport()
			tc.edit(r)
			_, info := write(t, r, strings.NewReader(tc.original), 1<<20)
			if info.Global != tc.global || info.SMTPUTF8 != tc.smtputf8 {
				t.Errorf("info: %+v", info)
			}
		})
	}
}

func TestOriginalRecipientForms(t *testing.T) {
	for name, tc := range map[string]struct {
		original, field, parsed string
		utf8                    bool
	}{
		"rfc822":               {"rfc822;a+b@example.com", "Original-Recipient: rfc822;a+b@example.com", "rfc822;a+b@example.com", false},
		"type case":            {"RFC822;a@example.com", "Original-Recipient: rfc822;a@example.com", "rfc822;a@example.com", false},
		"utf-8 xtext":          {"utf-8;a+b=c\\d@example.com", `Original-Recipient: utf-8;a\x{2B}b\x{3D}c\x{5C}d@example.com`, "utf-8;a+b=c\\d@example.com", false},
		"utf-8 global":         {"utf-8;ü+x@example.com", "Original-Recipient: utf-8;ü+x@example.com", "utf-8;ü+x@example.com", true},
		"rfc822 becomes utf-8": {"rfc822;ü@example.com", "Original-Recipient: utf-8;ü@example.com", "utf-8;ü@example.com", true},
		"other type":           {"x400;/C=US/O=Example/S=Bob", "Original-Recipient: x400;/C=US/O=Example/S=Bob", "x400;/C=US/O=Example/S=Bob", false},
	} {
		t.Run(name, func(t *testing.T) {
			r := baseReport()
			r.Recipients = r.Recipients[:1]
			r.Recipients[0].Original = tc.original
			out, info := write(t, r, nil, 0)
			if !bytes.Contains(out, []byte(tc.field+"\r\n")) {
				t.Errorf("no %q in\n%s", tc.field, out)
			}
			if info.Global != tc.utf8 {
				t.Errorf("global %v", info.Global)
			}
			if got := parse(t, out).Report.Recipients[0].Original; got != tc.parsed {
				t.Errorf("parsed %q, want %q", got, tc.parsed)
			}
		})
	}
}

func TestNormalisedFields(t *testing.T) {
	r := baseReport()
	r.ReceivedFromMTA = "client.example.com"
	r.MessageID = "<with-brackets@mx.example.org>"
	r.Recipients = []dsn.Recipient{
		{Final: " bob@example.net ", Action: dsn.Failed, RemoteMTA: "mx1.example.net", Diagnostic: "550-5.1.1 first line\r\n550 5.1.1 second line\r\n"},
		{Final: "carol@example.net", Action: dsn.Failed, Diagnostic: "no route to host"},
		{Final: "dave@example.net", Action: dsn.Failed, Diagnostic: "X-Unix; exit status 67"},
	}
	out, info := write(t, r, nil, 0)
	if info.MessageID != "with-brackets@mx.example.org" || !bytes.Contains(out, []byte("\r\nMessage-ID: <with-brackets@mx.example.org>\r\n")) {
		t.Errorf("message ID %q", info.MessageID)
	}
	p := parse(t, out)
	got := p.Report.Recipients
	for i, want := range []dsn.Recipient{
		{Final: "bob@example.net", Status: "5.0.0", RemoteMTA: "dns; mx1.example.net", Diagnostic: "smtp; 550-5.1.1 first line 550 5.1.1 second line"},
		{Final: "carol@example.net", Status: "5.0.0", Diagnostic: "x-local; no route to host"},
		{Final: "dave@example.net", Status: "5.0.0", Diagnostic: "X-Unix; exit status 67"},
	} {
		if got[i].Final != want.Final || got[i].Status != want.Status || got[i].RemoteMTA != want.RemoteMTA || got[i].Diagnostic != want.Diagnostic {
			t.Errorf("recipient %d: got %+v, want %+v", i, got[i], want)
		}
	}
	if p.Report.ReceivedFromMTA != "dns; client.example.com" {
		t.Errorf("received from %q", p.Report.ReceivedFromMTA)
	}

	// A generated Message-ID is in our domain.
	r.MessageID = ""
	_, info = write(t, r, nil, 0)
	if !strings.HasSuffix(info.MessageID, ".dsn@mx.example.org") || len(info.MessageID) < 30 {
		t.Errorf("generated message ID %q", info.MessageID)
	}
}

func TestLongDiagnostic(t *testing.T) {
	words := strings.Repeat("the remote server said something rather long ", 70) // 3150 octets
	solid := strings.Repeat("0123456789", 300)                                   // 3000 octets, no whitespace
	for name, diag := range map[string]string{"words": "smtp; 550 5.7.1 " + strings.TrimSpace(words), "no whitespace": "smtp; " + solid} {
		t.Run(name, func(t *testing.T) {
			r := baseReport()
			r.Recipients[0].Diagnostic = diag
			out, _ := write(t, r, strings.NewReader(origMessage), 1<<20)
			got := parse(t, out).Report.Recipients[0].Diagnostic
			if name == "no whitespace" {
				// Breaking a run without whitespace inserts folds, which read back as spaces.
				if strings.ReplaceAll(got, " ", "") != strings.ReplaceAll(diag, " ", "") {
					t.Errorf("diagnostic changed beyond inserted spaces: %q", got)
				}
				return
			}
			if got != diag {
				t.Errorf("diagnostic:\n got %q\nwant %q", got, diag)
			}
			// Whitespace allows folding within 78 octets everywhere.
			_, parts := stdParts(t, out)
			for _, line := range strings.Split(string(parts[1].body), "\r\n") {
				if len(line) > dsn.SoftLimit {
					t.Errorf("status line of %d octets: %q", len(line), line)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*dsn.Report)
		err  error
	}{
		"null sender":       {func(r *dsn.Report) { r.Sender = "" }, dsn.ErrNullSender},
		"no recipients":     {func(r *dsn.Report) { r.Recipients = nil }, dsn.ErrNoRecipients},
		"no reporting MTA":  {func(r *dsn.Report) { r.ReportingMTA = "" }, nil},
		"spaced MTA":        {func(r *dsn.Report) { r.ReportingMTA = "mx example" }, nil},
		"sender with CRLF":  {func(r *dsn.Report) { r.Sender = "a@b\r\nBcc: x@y" }, nil},
		"bad return":        {func(r *dsn.Report) { r.Return = "BODY" }, nil},
		"no final":          {func(r *dsn.Report) { r.Recipients[0].Final = " " }, nil},
		"bad action":        {func(r *dsn.Report) { r.Recipients[0].Action = "bounced" }, nil},
		"bad status":        {func(r *dsn.Report) { r.Recipients[0].Status = "550" }, nil},
		"status class 3":    {func(r *dsn.Report) { r.Recipients[0].Status = "3.0.0" }, nil},
		"status too long":   {func(r *dsn.Report) { r.Recipients[0].Status = "5.1234.1" }, nil},
		"untyped ORCPT":     {func(r *dsn.Report) { r.Recipients[0].Original = "a@example.com" }, nil},
		"final with CR":     {func(r *dsn.Report) { r.Recipients[0].Final = "a@b\rc" }, nil},
		"nil report marker": {nil, nil},
	} {
		t.Run(name, func(t *testing.T) {
			var r *dsn.Report
			if tc.edit != nil {
				r = baseReport()
				tc.edit(r)
			}
			var buf bytes.Buffer
			err := dsn.Write(&buf, r, strings.NewReader(origMessage), 1<<20)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("error %v, want %v", err, tc.err)
			}
			if buf.Len() != 0 {
				t.Errorf("%d octets written for an invalid report", buf.Len())
			}
		})
	}
}

func TestParseForeign(t *testing.T) {
	status := "Reporting-MTA: dns; mail.example.com\r\nX-Postfix-Queue-ID: 4Fx\r\n\r\n" +
		"Final-Recipient: RFC822; someone@example.net\r\nAction: failed (bad address)\r\n" +
		"Status: 5.0.0 (permanent failure)\r\nDiagnostic-Code: smtp;\r\n 550 no such user\r\n"
	b64 := base64.StdEncoding.EncodeToString([]byte(status))
	for i := 76; i < len(b64); i += 78 {
		b64 = b64[:i] + "\r\n" + b64[i:]
	}
	b64 += "\r\n"
	msg := "From: MAILER-DAEMON@mail.example.com\r\nTo: sender@example.org\r\nSubject: =?utf-8?q?Unzustellbar?=\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=\"delivery-status\";\r\n\tboundary=\"XYZ\"\r\n\r\n" +
		"--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nZustellung fehlgeschlagen =C3=BC\r\n" +
		"--XYZ\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64 +
		"--XYZ\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: x\r\n\r\n--XYZ--\r\n"
	p, err := dsntest.Parse(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if p.Text != "Zustellung fehlgeschlagen ü" {
		t.Errorf("text %q", p.Text)
	}
	rep := p.Report
	if rep.ReportingMTA != "mail.example.com" || rep.Sender != "sender@example.org" || rep.Return != "HDRS" {
		t.Errorf("report %+v", rep)
	}
	if len(rep.Recipients) != 1 {
		t.Fatalf("recipients %+v", rep.Recipients)
	}
	rc := rep.Recipients[0]
	if rc.Final != "someone@example.net" || rc.Action != dsn.Failed || rc.Status != "5.0.0" || rc.Diagnostic != "smtp; 550 no such user" {
		t.Errorf("recipient %+v", rc)
	}
	if dsntest.Lookup(p.MessageFields, "x-postfix-queue-id") != "4Fx" {
		t.Errorf("extension field lost: %+v", p.MessageFields)
	}
}

func TestParseNotDSN(t *testing.T) {
	for name, msg := range map[string]string{
		"plain":          "From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n",
		"mixed":          "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
		"no status part": "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
		"no boundary":    "Content-Type: multipart/report; report-type=delivery-status\r\n\r\nx\r\n",
	} {
		if _, err := dsntest.Parse(strings.NewReader(msg)); !errors.Is(err, dsntest.ErrNotDSN) {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	r := baseReport()
	var buf bytes.Buffer
	if err := dsn.Write(&buf, r, strings.NewReader(origMessage), 1<<20); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	buf.Reset()
	r.Return = "FULL"
	r.UTF8 = true
	if err := dsn.Write(&buf, r, strings.NewReader(origMessage), 1<<20); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n" +
		"Final-Recipient: utf-8; \\x{41}\\x{\r\n Action: x\r\n\r\n\r\n --b--\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := dsntest.Parse(bytes.NewReader(data))
		if err == nil && p.StatusType == "" {
			t.Errorf("parsed without a status part")
		}
	})
}

// FuzzWrite checks that whatever the diagnostic and the original hold, the
// DSN is well-formed and reads back.
func FuzzWrite(f *testing.F) {
	f.Add("smtp; 550 5.1.1 user unknown", []byte(origMessage), true)
	f.Add("a\r\n\r\nb\tc"+strings.Repeat("x", 1200), []byte("Subject: \xff\r\n\r\n\x00"), false)
	f.Fuzz(func(t *testing.T, diag string, original []byte, full bool) {
		r := baseReport()
		r.Recipients[0].Diagnostic = diag
		if full {
			r.Return = "FULL"
		}
		var buf bytes.Buffer
		if err := dsn.Write(&buf, r, bytes.NewReader(original), 4096); err != nil {
			t.Fatal(err)
		}
		checkLines(t, buf.Bytes())
		p, err := dsntest.Parse(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("Parse: %v\n%q", err, buf.Bytes())
		}
		if len(p.Report.Recipients) != 2 || p.Report.Recipients[1].Final != "carol@example.net" {
			t.Errorf("recipients %+v", p.Report.Recipients)
		}
	})
}

// flat joins the words of s with single spaces, undoing text wrapping.
func flat(s string) string { return strings.Join(strings.Fields(s), " ") }

// short quotes s for a test failure, eliding the middle of a long one.
func short(s string) string {
	if len(s) > 300 {
		return fmt.Sprintf("%q ... %q (%d octets)", s[:150], s[len(s)-150:], len(s))
	}
	return fmt.Sprintf("%q", s)
}
