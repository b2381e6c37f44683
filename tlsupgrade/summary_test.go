package tlsupgrade

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
)

// TestDialErrorSummary: every stage says what happened in words, with no
// address and no Go error text.
func TestDialErrorSummary(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 25},
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	cases := []struct {
		err  DialError
		want string
	}{
		{DialError{Stage: StageDial, Err: refused}, "connection refused"},
		{DialError{Stage: StageDial, Err: context.DeadlineExceeded}, "timed out"},
		{DialError{Stage: StageDial, Err: &net.DNSError{Err: "no such host", Name: "mx.example", IsNotFound: true}}, "host name not found"},
		{DialError{Stage: StageGreeting, Err: &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "busy"}}, "greeting: 421 4.3.2 busy"},
		{DialError{Stage: StageGreeting, Err: fmt.Errorf("reading: %w", syscall.ECONNRESET)}, "greeting failed: connection reset"},
		{DialError{Stage: StageSTARTTLS, Err: ErrSTARTTLSNotOffered, Result: Result{Failure: ResultSTARTTLSNotSupported}}, "STARTTLS not offered, and the TLS policy requires it"},
		{DialError{Stage: StageHandshake, Err: fmt.Errorf("x509: unknown authority"), Result: Result{Failure: ResultCertificateNotTrusted}}, "TLS certificate not trusted"},
		{DialError{Stage: StageHandshake, Err: fmt.Errorf("remote error: tls: protocol version not supported")}, "TLS handshake failed: connection error"},
		{DialError{Stage: StagePolicy, Err: ErrMXNotInPolicy}, "host not listed in the MTA-STS policy"},
		{DialError{Stage: StageTLSEHLO, Err: &smtp.SMTPError{Code: 554, Message: strings.Repeat("x", 300)}}, "EHLO after STARTTLS: 554 " + strings.Repeat("x", 196) + "..."},
	}
	for _, c := range cases {
		if got := c.err.Summary(); got != c.want {
			t.Errorf("%s: %v: got %q, want %q", c.err.Stage, c.err.Err, got, c.want)
		}
	}
}
