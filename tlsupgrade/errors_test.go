package tlsupgrade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestIsTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&DialError{Stage: StageGreeting, Temporary: true, Err: io.EOF}, true},
		{fmt.Errorf("mx1: %w", &DialError{Stage: StageOptions, Err: io.EOF}), false},
		{&smtp.SMTPError{Code: 451}, true},
		{fmt.Errorf("rcpt: %w", &smtp.SMTPError{Code: 550}), false},
		{io.EOF, true},
		{&net.OpError{Op: "read", Err: errors.New("reset")}, true},
		{context.DeadlineExceeded, true},
		{errors.New("smtp: a line must not contain CR or LF"), false},
	} {
		if got := IsTemporary(tc.err); got != tc.want {
			t.Errorf("IsTemporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestReplies(t *testing.T) {
	for _, tc := range []struct {
		code int
		msg  string
		ec   smtp.EnhancedCode
		text string
		line string
	}{
		{454, "4.7.0 TLS not available", smtp.EnhancedCode{4, 7, 0}, "TLS not available", "454 4.7.0 TLS not available"},
		{554, "no SMTP service", smtp.EnhancedCode{}, "no SMTP service", "554 no SMTP service"},
		{421, "4.3.2 busy\n4.3.2 try later", smtp.EnhancedCode{4, 3, 2}, "busy\ntry later", "421 4.3.2 busy try later"},
		{550, "5.7.x odd", smtp.EnhancedCode{}, "5.7.x odd", "550 5.7.x odd"},
		{250, "", smtp.EnhancedCode{}, "", "250"},
	} {
		se := parseReply(tc.code, tc.msg)
		if se.Code != tc.code || se.EnhancedCode != tc.ec || se.Message != tc.text {
			t.Errorf("parseReply(%d, %q) = %+v", tc.code, tc.msg, se)
		}
		if got := formatReply(se); got != tc.line {
			t.Errorf("formatReply(%+v) = %q, want %q", se, got, tc.line)
		}
	}
}

func TestReplayGreeting(t *testing.T) {
	for in, want := range map[string]string{
		"mx.test ESMTP":          "220 mx.test ESMTP\r\n",
		"":                       "220 \r\n",
		"mx.test\nwelcome\nhere": "220-mx.test\r\n220-welcome\r\n220 here\r\n",
	} {
		if got := string(replayGreeting(in)); got != want {
			t.Errorf("replayGreeting(%q) = %q, want %q", in, got, want)
		}
	}
}
