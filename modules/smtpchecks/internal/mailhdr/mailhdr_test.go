package mailhdr

import (
	"slices"
	"testing"
)

func TestFields(t *testing.T) {
	got := Fields([]byte("From: a@b\r\nSubject: one\r\n two\r\n\tthree\r\nTo: c@d\r\n"))
	want := []string{"From: a@b", "Subject: one two\tthree", "To: c@d"}
	if !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
}
