package smtpapp

import (
	"strings"
	"testing"
)

// TestReplyLinesHoldsUntilLastLine: continuation lines are held and go out
// with the last line of their reply; a line written in pieces, or a reply
// longer than maxHeldReply, is not held back whole.
func TestReplyLinesHoldsUntilLastLine(t *testing.T) {
	var r replyLines
	var wrote []string
	add := func(p string, mid bool) {
		t.Helper()
		out, held := r.add([]byte(p), mid)
		if held != (out == nil) {
			t.Fatalf("add(%q): out %q, held %t", p, out, held)
		}
		if !held {
			wrote = append(wrote, string(out))
		}
	}
	add("250-mx.example\r\n", false)
	add("250-PIPELINING\r\n", false)
	add("250 SMTPUTF8\r\n", false)
	add("250 2.0.0 OK\r\n", false)
	want := []string{"250-mx.example\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n", "250 2.0.0 OK\r\n"}
	if strings.Join(wrote, "|") != strings.Join(want, "|") {
		t.Fatalf("wrote %q, want %q", wrote, want)
	}
	if r.held != nil {
		t.Fatalf("still holding %q after a complete reply", r.held)
	}

	// A line longer than go-smtp's buffer comes in pieces: the first
	// piece has no line end and is written with what was held.
	wrote = nil
	add("250-a\r\n", false)
	add("250-"+strings.Repeat("x", 10), false)
	add(strings.Repeat("y", 10)+"\r\n", true)
	add("250 end\r\n", false)
	want = []string{"250-a\r\n250-xxxxxxxxxx", "yyyyyyyyyy\r\n", "250 end\r\n"}
	if strings.Join(wrote, "|") != strings.Join(want, "|") {
		t.Fatalf("wrote %q, want %q", wrote, want)
	}

	// Never more than maxHeldReply bytes held.
	wrote = nil
	line := "250-" + strings.Repeat("z", 96) + "\r\n"
	for range 100 {
		add(line, false)
		if len(r.held) > maxHeldReply {
			t.Fatalf("holding %d bytes", len(r.held))
		}
	}
	add("250 end\r\n", false)
	if got := strings.Join(wrote, ""); got != strings.Repeat(line, 100)+"250 end\r\n" {
		t.Fatalf("a long reply came out as %d bytes in %d writes, not as sent", len(got), len(wrote))
	}
	if len(wrote) < 2 {
		t.Fatalf("a %d-byte reply went out in one write", 100*len(line))
	}
}

// TestPlainFilterHoldsContinuationLines: before TLS the filter holds a
// reply's continuation lines too, and rewrites each line as before.
func TestPlainFilterHoldsContinuationLines(t *testing.T) {
	var f plainFilter
	if out, held := f.write([]byte("250-mx.example\r\n")); !held || out != nil {
		t.Fatalf("first line: out %q, held %t", out, held)
	}
	out, held := f.write([]byte("250 2.0.0 I have successfully done nothing\r\n"))
	if held || string(out) != "250-mx.example\r\n250 2.0.0 OK\r\n" {
		t.Fatalf("last line: out %q, held %t", out, held)
	}
}
