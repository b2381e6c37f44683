package dsn

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// Line lengths of RFC 5322 section 2.1.1, not counting the CRLF: lines
// SHOULD stay within 78 octets and MUST stay within 998.
const (
	softLimit = 78
	hardLimit = 998
	// textWidth is where the human-readable part wraps.
	textWidth = 76
)

// writeField writes the header field "name: value" to b, with CR and LF
// removed from value (see clean) and the line folded (see fold).
func writeField(b *bytes.Buffer, name, value string) {
	fold(b, name+": "+clean(value), len(name)+2, softLimit)
}

// fold writes line to b as one or more lines, each ended by CRLF, so that
// unfolding (removing each CRLF that precedes whitespace) gives back line.
// Lines longer than soft are folded before a whitespace character that
// follows a non-whitespace one, at or after index minFold of the first
// line: at the last such place within soft, or else the first within
// hardLimit. A line with no such place is left long if it fits in
// hardLimit, and otherwise broken within hardLimit (on a UTF-8 character
// boundary) by inserting a fold: the only case where unfolding adds
// something, a single space.
func fold(b *bytes.Buffer, line string, minFold, soft int) {
	for len(line) > soft {
		i := foldPoint(line, minFold, soft)
		switch {
		case i > 0:
			b.WriteString(line[:i])
			b.WriteString("\r\n")
			line = line[i:]
		case len(line) <= hardLimit:
			b.WriteString(line)
			b.WriteString("\r\n")
			return
		default:
			i = hardLimit
			for i > 1 && !utf8.RuneStart(line[i]) {
				i--
			}
			b.WriteString(line[:i])
			b.WriteString("\r\n")
			line = " " + line[i:]
		}
		minFold = 1
	}
	b.WriteString(line)
	b.WriteString("\r\n")
}

// foldPoint returns where fold should break line, or 0 if nowhere.
func foldPoint(line string, minFold, soft int) int {
	best := 0
	for i := max(minFold, 1); i < len(line) && i <= hardLimit; i++ {
		if !isWSP(line[i]) || isWSP(line[i-1]) {
			continue
		}
		if i > soft {
			if best == 0 {
				best = i
			}
			break
		}
		best = i
	}
	return best
}

// wrapText writes s to b as lines of at most textWidth octets where the
// words allow, each ended by CRLF. The first line starts with first and the
// others with indent. Runs of whitespace become single spaces; a word too
// long for any line is split (on a UTF-8 character boundary) so that no
// line exceeds hardLimit.
func wrapText(b *strings.Builder, s, first, indent string) {
	line := first
	words := 0
	emit := func() {
		b.WriteString(strings.TrimRight(line, " "))
		b.WriteString("\r\n")
		line, words = indent, 0
	}
	maxWord := hardLimit - len(indent) - len(first) - 1
	for _, w := range strings.Fields(s) {
		for w != "" {
			chunk := w
			if len(chunk) > maxWord {
				n := maxWord
				for n > 1 && !utf8.RuneStart(chunk[n]) {
					n--
				}
				chunk = chunk[:n]
			}
			w = w[len(chunk):]
			if words > 0 && len(line)+1+len(chunk) > textWidth {
				emit()
			}
			if words > 0 {
				line += " "
			}
			line += chunk
			words++
		}
	}
	emit()
}

// clean makes s fit on one header line: each run of CR and LF characters
// becomes a single space, and leading and trailing blanks are removed.
// Nothing else is changed or escaped.
func clean(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		var b strings.Builder
		b.Grow(len(s))
		inBreak := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == '\r' || c == '\n' {
				if !inBreak {
					b.WriteByte(' ')
				}
				inBreak = true
				continue
			}
			inBreak = false
			b.WriteByte(c)
		}
		s = b.String()
	}
	return strings.Trim(s, " \t")
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// isASCII reports whether s has only octets below 128.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// isAtom reports whether s is a non-empty RFC 5322 atom (atext only), the
// syntax of address and diagnostic types.
func isAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
