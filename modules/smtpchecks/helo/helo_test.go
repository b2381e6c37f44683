package helo

import (
	"context"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func TestHELONames(t *testing.T) {
	strict, lax := &HELO{}, &HELO{AllowUnqualified: true}
	for name, want := range map[string][2]int{ // reply code: strict, lax (0: taken)
		"mail.example.com":   {0, 0},
		"mail.example.com.":  {0, 0},
		"xn--bcher-kva.test": {0, 0},
		"[192.0.2.1]":        {0, 0},
		"[IPv6:2001:db8::1]": {0, 0},
		"localhost":          {504, 0},
		"pc42":               {504, 0},
		"[192.0.2.999]":      {501, 501},
		"[mail.example.com]": {501, 501},
		"192.0.2.1":          {501, 501},
		"-bad.example.com":   {501, 501},
		"bad..example.com":   {501, 501},
		"bad example":        {501, 501},
		"bad/host.example":   {501, 501},
		"":                   {501, 501},
	} {
		for i, h := range []*HELO{strict, lax} {
			v := h.CheckRecipient(context.Background(), &smtpapp.CheckInput{Helo: name})
			got := 0
			if v.Result != smtpapp.VerdictAccept {
				got = v.Reply.Code
			}
			if got != want[i] {
				t.Errorf("HELO %q (allow_unqualified=%v): %d, want %d", name, i == 1, got, want[i])
			}
		}
	}
}
