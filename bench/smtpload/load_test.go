package smtpload

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	got := Summarize(d)
	want := Latency{Count: 100, Mean: 50.5, P50: 50, P90: 90, P99: 99, Max: 100}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if one := Summarize([]time.Duration{3 * time.Millisecond}); one.P50 != 3 || one.P99 != 3 {
		t.Fatalf("one sample: %+v", one)
	}
	if (Summarize(nil) != Latency{}) {
		t.Fatal("no samples should give zeros")
	}
}

func TestMessageSize(t *testing.T) {
	for _, size := range []int{300, 4096, 102400, 4097} {
		m := newMessageMaker(Config{From: "a@b.test", Rcpt: "c@d.test", Size: size})
		msg := m.make(nil, 12345, 7)
		if len(msg) != size {
			t.Errorf("size %d: got %d bytes", size, len(msg))
		}
		if !bytes.HasSuffix(msg, []byte("\r\n")) || bytes.Contains(msg, []byte("\n.")) {
			t.Errorf("size %d: message must end with CRLF and need no dot-stuffing", size)
		}
		if bytes.Count(msg, []byte("\n")) != bytes.Count(msg, []byte("\r\n")) {
			t.Errorf("size %d: bare LF in message", size)
		}
	}
}

func TestHasExtension(t *testing.T) {
	ehlo := "mx.test greets you\nPIPELINING\nSTARTTLS\nSIZE 1000"
	if !hasExtension(ehlo, "starttls") || !hasExtension(ehlo, "SIZE") || hasExtension(ehlo, "mx.test") {
		t.Fatal("extension parsing")
	}
}

func TestErrorKey(t *testing.T) {
	timeout := &net.OpError{Op: "read", Err: timeoutErr{}}
	for _, c := range []struct {
		err  error
		want string
	}{
		{&ReplyError{Code: 451, Text: "try later"}, "451"},
		{&stageError{stage: "greeting", err: &ReplyError{Code: 421}}, "421"},
		{&stageError{stage: "handshake", err: errors.New("bad record")}, "handshake"},
		{timeout, "timeout"},
		{errors.New("EOF"), "io"},
	} {
		if got := errorKey(c.err); got != c.want {
			t.Errorf("%v: got %q, want %q", c.err, got, c.want)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
