package headerfilter

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestReaderDropsFields: the reader leaves out every occurrence of the
// named fields (folded ones whole, any case) from the header section
// only, whatever the sizes of the reads underneath.
func TestReaderDropsFields(t *testing.T) {
	in := "Received: from a\r\n\tby b\r\nsubject: old\r\n one\r\nTo: x@y\r\nSUBJECT: again\r\n\r\nSubject: in the body\r\n"
	want := "Received: from a\r\n\tby b\r\nTo: x@y\r\n\r\nSubject: in the body\r\n"
	hold := func(name string) bool { return strings.EqualFold(name, "Subject") }
	all := func([]byte) bool { return true }
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"one byte": iotest.OneByteReader(strings.NewReader(in)),
		"half":     iotest.HalfReader(strings.NewReader(in)),
	} {
		got, err := io.ReadAll(NewReader(r, hold, all))
		if err != nil || string(got) != want {
			t.Errorf("%s: %v\n%q\nwant\n%q", name, err, got, want)
		}
	}
	kept, _ := io.ReadAll(NewReader(strings.NewReader(in), hold, func([]byte) bool { return false }))
	if string(kept) != in {
		t.Errorf("drop says no: the message changed:\n%q", kept)
	}
}
