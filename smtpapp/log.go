package smtpapp

import (
	"fmt"
	"strings"

	"go.uber.org/zap"
)

// zapPrintfLogger gives go-smtp a zap-backed ErrorLog. go-smtp logs every
// connection that ends with an error (scanners, failed handshakes), which is
// debug material; panics are errors.
type zapPrintfLogger struct{ l *zap.Logger }

func (z zapPrintfLogger) Printf(format string, v ...any) { z.log(fmt.Sprintf(format, v...)) }
func (z zapPrintfLogger) Println(v ...any)               { z.log(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }

func (z zapPrintfLogger) log(msg string) {
	if strings.Contains(msg, "panic") {
		z.l.Error("smtp protocol handler", zap.String("error", msg))
		return
	}
	z.l.Debug("smtp connection ended with an error", zap.String("error", msg))
}
