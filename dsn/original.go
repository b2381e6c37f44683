package dsn

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"unicode/utf8"
)

// maxHeaderSize bounds how much of the original is read for its header
// section; a longer header section is cut at a line boundary.
const maxHeaderSize = 1 << 20

// originalCopy is what a DSN carries of the original message.
type originalCopy struct {
	returned Returned
	// data is the content of the third part: the whole message, or its
	// header section (each line ended by CRLF, without the blank line).
	data []byte
	// utf8Header reports that the header section is non-ASCII UTF-8, an
	// internationalised message (RFC 6532).
	utf8Header bool
	// notFull says why a requested full return gave only the header:
	// "too large", "malformed" or notFullRequireTLS; "" otherwise.
	notFull string
}

// notFullRequireTLS is notFull for a REQUIRETLS original, which is never
// returned in full (RFC 8689 section 5).
const notFullRequireTLS = "requiretls"

// readOriginal reads what the DSN returns of r: with full, the whole
// message when it has at most max octets and is well-formed; otherwise
// its header section. An empty message or header section returns nothing.
func readOriginal(r io.Reader, full bool, max int64) (originalCopy, error) {
	if r == nil {
		return originalCopy{}, nil
	}
	var o originalCopy
	if full {
		buf, err := io.ReadAll(io.LimitReader(r, min(max, math.MaxInt64-1)+1))
		if err != nil {
			return o, err
		}
		switch {
		case int64(len(buf)) > max:
			o.notFull = "too large"
		case !wellFormed(buf):
			o.notFull = "malformed"
		case len(buf) == 0:
			return o, nil
		default:
			o.returned, o.data = ReturnedFull, buf
			o.utf8Header = isUTF8(headerSection(buf))
			return o, nil
		}
		r = io.MultiReader(bytes.NewReader(buf), r)
	}
	hdr, err := readHeader(r)
	if err != nil {
		return o, err
	}
	if len(hdr) == 0 {
		return originalCopy{}, nil
	}
	o.returned, o.data = ReturnedHeaders, hdr
	o.utf8Header = isUTF8(hdr)
	return o, nil
}

// readHeader returns the header section of the message in r: its lines up
// to the first empty line or the end, each ended by CRLF. To keep the DSN
// well-formed, LF line endings become CRLF, bare CRs become spaces, lines
// longer than hardLimit are folded, and at most maxHeaderSize octets are
// read. A well-formed header section comes back unchanged.
func readHeader(r io.Reader) ([]byte, error) {
	lr := &io.LimitedReader{R: r, N: maxHeaderSize}
	br := bufio.NewReader(lr)
	var out bytes.Buffer
	for {
		line, err := br.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return nil, err
		}
		complete := len(line) > 0 && line[len(line)-1] == '\n'
		if !complete && err == io.EOF && lr.N == 0 {
			break // cut by the size limit: drop the partial line
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break // the blank line that ends the header, or the end
		}
		line = bytes.ReplaceAll(line, []byte("\r"), []byte(" "))
		fold(&out, string(line), max(bytes.IndexByte(line, ':')+2, 1), hardLimit)
		if err == io.EOF {
			break
		}
	}
	return out.Bytes(), nil
}

// headerSection returns the header section of a message with CRLF lines.
func headerSection(msg []byte) []byte {
	if bytes.HasPrefix(msg, []byte("\r\n")) {
		return nil
	}
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+2]
	}
	return msg
}

// wellFormed reports whether msg can travel as a message/rfc822 part of
// 7bit or 8bit encoding (RFC 2045 section 2.7 and 2.8): no NUL, CR and LF
// only as CRLF, no line longer than hardLimit octets.
func wellFormed(msg []byte) bool {
	lineStart := 0
	for i, c := range msg {
		switch c {
		case 0:
			return false
		case '\r':
			if i+1 >= len(msg) || msg[i+1] != '\n' {
				return false
			}
		case '\n':
			if i == 0 || msg[i-1] != '\r' {
				return false
			}
			if i-1-lineStart > hardLimit {
				return false
			}
			lineStart = i + 1
		}
	}
	return len(msg)-lineStart <= hardLimit
}

// isUTF8 reports whether b holds non-ASCII text that is valid UTF-8.
func isUTF8(b []byte) bool {
	return !isASCII(string(b)) && utf8.Valid(b)
}
