package smtpapp_test

import (
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// TestParseListenAddress: addresses Caddy parses but no bind can use are
// refused when the config loads.
func TestParseListenAddress(t *testing.T) {
	for addr, ok := range map[string]bool{
		":25":                 true,
		"127.0.0.1:25":        true,
		"[::1]:25":            true,
		"[fe80::1%eth0]:25":   true,
		"mx.example.com:25":   true,
		"localhost:2525":      true,
		"tcp4/0.0.0.0:25":     true,
		"unix//run/smtp.sock": true,
		"127.0.0.1:25-26":     true,
		"127.0.0.999:25":      false,
		"1.2.3:25":            false,
		"mx_1.example.com:25": false,
		"-mx.example.com:25":  false,
		"127.0.0.1:99999":     false,
		"udp/127.0.0.1:25":    false,
		"127.0.0.1%eth0:25":   false,
		"mx.example.123:25":   false,
		"exa mple.com:25":     false,
	} {
		_, err := smtpapp.ParseListenAddress(addr)
		if (err == nil) != ok {
			t.Errorf("ParseListenAddress(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}
