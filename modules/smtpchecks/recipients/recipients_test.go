package recipients

import (
	"strings"
	"testing"
)

func TestParseEntries(t *testing.T) {
	s, err := parseEntries([]string{"Alice@Example.COM", "@Example.org.", `"odd@local"@example.net`}, "test")
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"alice@example.com":       true,
		"alice+x@example.com":     true,
		"bob@example.com":         false,
		"anyone@example.org":      true,
		`"odd@local"@example.net`: true,
		"local" + "@example.net":  false,
		"alice@example.com.evil":  false,
		"alice@sub.example.org":   false,
	} {
		if got := s.has(normalize(addr)); got != want {
			t.Errorf("%s: listed %v, want %v", addr, got, want)
		}
	}
	for _, bad := range []string{"alice", "@", "alice@", "@a@b", "a b@example.com", "@exa mple.org"} {
		if _, err := parseEntries([]string{bad}, "test"); err == nil || !strings.Contains(err.Error(), "test") {
			t.Errorf("entry %q: error %v, want one saying where", bad, err)
		}
	}
}
