package resolver

import (
	"errors"
	"strings"
	"testing"
)

func TestCanonicalName(t *testing.T) {
	tests := []struct {
		in, want string // want "" means ErrInvalidName
	}{
		{"example.com", "example.com."},
		{"Example.COM.", "example.com."},
		{"_25._tcp.MX.example.com", "_25._tcp.mx.example.com."},
		{"_mta-sts.example.com", "_mta-sts.example.com."},
		{"bücher.example", "xn--bcher-kva.example."},
		{"BÜCHER.example.", "xn--bcher-kva.example."},
		{"xn--bcher-kva.example", "xn--bcher-kva.example."},
		{"straße.de", "xn--strae-oqa.de."},    // IDNA2008, not transitional "strasse"
		{"例え。テスト", "xn--r8jz45g.xn--zckzah."}, // ideographic full stop
		{"localhost", "localhost."},
		{strings.Repeat("a", 63) + ".test", strings.Repeat("a", 63) + ".test."},
		{"", ""},
		{".", ""},
		{"example..com", ""},
		{".example.com", ""},
		{"example.com..", ""},
		{"exa mple.com", ""},
		{"exa\x00mple.com", ""},
		{"[192.0.2.1]", ""},
		{"user@example.com", ""},
		{strings.Repeat("a", 64) + ".test", ""},
		{strings.Repeat("abcdefghi.", 26), ""}, // 259 characters
		{"bad\xffutf8.test", ""},
		{"a\u200db.test", ""}, // ZWJ outside of its allowed context
	}
	for _, tt := range tests {
		got, err := canonicalName(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("canonicalName(%q) = %q, %v; want ErrInvalidName", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("canonicalName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestServerAddr(t *testing.T) {
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"192.0.2.53", "192.0.2.53:53"},
		{"192.0.2.53:5353", "192.0.2.53:5353"},
		{"2001:db8::53", "[2001:db8::53]:53"},
		{"[2001:db8::53]", "[2001:db8::53]:53"},
		{"[2001:db8::53]:5353", "[2001:db8::53]:5353"},
		{"dns.example:53", ""},
		{"dns.example", ""},
		{"192.0.2.53:0", ""},
		{"192.0.2.53:70000", ""},
		{"192.0.2.53:port", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := serverAddr(tt.in)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("serverAddr(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
