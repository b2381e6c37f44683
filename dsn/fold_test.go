package dsn

import (
	"bytes"
	"strings"
	"testing"
)

func TestFold(t *testing.T) {
	for name, line := range map[string]string{
		"short":       "Action: failed",
		"words":       "Diagnostic-Code: smtp; " + strings.Repeat("word ", 60) + "end",
		"tabs":        "X: a\tb\t\tc " + strings.Repeat("x", 80) + "\t" + strings.Repeat("y", 80),
		"long token":  "X: " + strings.Repeat("z", 500) + " tail",
		"utf-8 solid": "X: " + strings.Repeat("ü", 700),
		"space runs":  "X: " + strings.Repeat("a    ", 40),
	} {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			fold(&b, line, 3, softLimit)
			out := b.String()
			for _, l := range strings.SplitAfter(out, "\r\n") {
				if body := strings.TrimSuffix(l, "\r\n"); strings.ContainsAny(body, "\r\n") || len(body) > hardLimit {
					t.Errorf("bad folded line %q", l)
				}
			}
			for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
				if strings.Trim(l, " \t") == "" {
					t.Errorf("blank line in %q", out)
				}
			}
			unfolded := strings.ReplaceAll(strings.TrimSuffix(out, "\r\n"), "\r\n", "")
			if name == "utf-8 solid" {
				unfolded = strings.ReplaceAll(unfolded, "\r\n ", "")
				if !strings.HasPrefix(out, "X: ") || strings.ReplaceAll(unfolded, " ", "") != strings.ReplaceAll(line, " ", "") {
					t.Errorf("hard break lost characters")
				}
				return
			}
			if unfolded != line {
				t.Errorf("unfolds to\n%q\nwant\n%q", unfolded, line)
			}
		})
	}
}

func TestUTF8AddrXtext(t *testing.T) {
	for _, tc := range []struct{ raw, enc string }{
		{"a@example.com", "a@example.com"},
		{"a+b=c@example.com", `a\x{2B}b\x{3D}c@example.com`},
		{`"a b"@example.com`, `"a\x{20}b"@example.com`},
		{"用户@example.net", `\x{7528}\x{6237}@example.net`},
		{"😀@example.net", `\x{1F600}@example.net`},
	} {
		if got := utf8AddrXtext(tc.raw); got != tc.enc {
			t.Errorf("encode %q: got %q, want %q", tc.raw, got, tc.enc)
		}
		if got := DecodeUTF8Addr(tc.enc); got != tc.raw {
			t.Errorf("decode %q: got %q, want %q", tc.enc, got, tc.raw)
		}
	}
	// Malformed escapes are kept as they are.
	for _, s := range []string{`\x{`, `\x{}`, `a\x{ZZ}b`, `\x{1234567}`, `\x{110000}`, `\x{D800}`, `x\x{41`} {
		if got := DecodeUTF8Addr(s); got != s {
			t.Errorf("decode %q: got %q", s, got)
		}
	}
}

// TestParseForeign reads a DSN as another MTA might write it: a base64
// status part, comments after the action and status, quoted-printable text
// and a missing Arrival-Date.
