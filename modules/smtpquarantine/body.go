package smtpquarantine

// The text rendering of a message body for the detail page. A quarantined
// message is suspect by definition: its HTML is never rendered, only
// turned into plain text that the page template escapes, so no markup,
// script or remote content of the message reaches the browser.

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"golang.org/x/text/encoding/htmlindex"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/quarantineview"
)

// Bounds of the rendering.
const (
	maxTextShown = 256 << 10 // characters of text on the page
	maxDepth     = 8         // nesting of multipart parts
	maxParts     = 100
)

// renderedBody is a message body as the detail page shows it.
type renderedBody struct {
	// Text is the text/plain part, or else the text of the HTML part, or
	// else a single-part body that is neither.
	Text string
	// FromHTML is set when Text was stripped from HTML.
	FromHTML bool
	// Truncated is set when Text was cut at maxTextShown.
	Truncated bool
	// Parts lists the attachments and the parts not shown.
	Parts []partInfo
}

// partInfo describes a MIME part that is not shown.
type partInfo struct {
	Type     string
	Filename string
	Size     int
}

// walker collects the parts of a message.
type walker struct {
	plain, html string
	hasPlain    bool
	hasHTML     bool
	parts       []partInfo
	count       int
}

// renderBody renders the body of a message with the given header
// section.
func renderBody(header textproto.MIMEHeader, body []byte) renderedBody {
	var w walker
	w.part(header, body, 0)
	var out renderedBody
	switch {
	case w.hasPlain:
		out.Text = w.plain
	case w.hasHTML:
		out.Text, out.FromHTML = htmlText(w.html), true
	}
	if len(out.Text) > maxTextShown {
		cut := maxTextShown
		for cut > 0 && !utf8.RuneStart(out.Text[cut]) {
			cut--
		}
		out.Text, out.Truncated = out.Text[:cut], true
	}
	out.Parts = w.parts
	return out
}

// part takes one part (the whole body at depth 0).
func (w *walker) part(h textproto.MIMEHeader, raw []byte, depth int) {
	w.count++
	if w.count > maxParts {
		return
	}
	ctype, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		ctype, params = "text/plain", map[string]string{"charset": "us-ascii"}
	}
	data := decodeTransfer(h.Get("Content-Transfer-Encoding"), raw)
	if strings.HasPrefix(ctype, "multipart/") && params["boundary"] != "" && depth < maxDepth {
		r := multipart.NewReader(bytes.NewReader(raw), params["boundary"])
		for {
			p, err := r.NextRawPart()
			if err != nil {
				return // io.EOF, or a malformed rest: what was read stays
			}
			b, err := io.ReadAll(p)
			if err != nil {
				return
			}
			w.part(p.Header, b, depth+1)
		}
	}
	disposition, dparams, _ := mime.ParseMediaType(h.Get("Content-Disposition"))
	filename := quarantineview.DecodeHeader(dparams["filename"])
	if filename == "" {
		filename = quarantineview.DecodeHeader(params["name"])
	}
	attachment := disposition == "attachment" || filename != ""
	switch {
	case ctype == "text/plain" && !attachment && !w.hasPlain:
		w.plain, w.hasPlain = toUTF8(data, params["charset"]), true
	case ctype == "text/html" && !attachment && !w.hasHTML:
		w.html, w.hasHTML = toUTF8(data, params["charset"]), true
	default:
		w.parts = append(w.parts, partInfo{Type: ctype, Filename: filename, Size: len(data)})
	}
}

// decodeTransfer undoes a Content-Transfer-Encoding; what does not decode
// is kept as it came.
func decodeTransfer(cte string, raw []byte) []byte {
	var r io.Reader
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &lineJoiner{b: raw})
	case "quoted-printable":
		r = quotedprintable.NewReader(bytes.NewReader(raw))
	default:
		return raw
	}
	out, err := io.ReadAll(r)
	if err != nil && len(out) == 0 {
		return raw
	}
	return out
}

// lineJoiner reads base64 text without its line breaks and spaces.
type lineJoiner struct{ b []byte }

func (l *lineJoiner) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && len(l.b) > 0 {
		c := l.b[0]
		l.b = l.b[1:]
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			p[n] = c
			n++
		}
	}
	if n == 0 && len(l.b) == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// toUTF8 converts text in a charset to UTF-8; an unknown charset is read
// as UTF-8, and bytes that are not UTF-8 become U+FFFD.
func toUTF8(b []byte, charset string) string {
	if charset != "" && !strings.EqualFold(charset, "utf-8") && !strings.EqualFold(charset, "us-ascii") {
		if enc, err := htmlindex.Get(charset); err == nil {
			if d, err := enc.NewDecoder().Bytes(b); err == nil {
				b = d
			}
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// htmlText is the text of an HTML document: its text nodes, with line
// breaks for block elements, without the content of script, style and
// head, and with a link's target after its text ("text [url]") so that a
// reader sees where it points. Nothing of the markup survives.
func htmlText(doc string) string {
	var b strings.Builder
	z := html.NewTokenizer(strings.NewReader(doc))
	skip := 0  // inside script, style, head, title, template, noscript
	href := "" // the target of the open link
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return tidy(b.String())
		case html.TextToken:
			if skip == 0 {
				writeText(&b, string(z.Text()))
			}
			continue
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
		default:
			continue
		}
		name, hasAttr := z.TagName()
		a := atom.Lookup(name)
		switch {
		case hidden[a] && tt == html.StartTagToken:
			skip++
		case hidden[a] && tt == html.EndTagToken:
			skip = max(skip-1, 0)
		case a == atom.A && tt == html.StartTagToken:
			href = ""
			for hasAttr {
				var k, v []byte
				k, v, hasAttr = z.TagAttr()
				if string(k) == "href" {
					href = strings.TrimSpace(string(v))
				}
			}
		case a == atom.A && tt == html.EndTagToken:
			if href != "" && skip == 0 {
				fmt.Fprintf(&b, " [%s]", href)
			}
			href = ""
		}
		if block[a] {
			b.WriteString("\n")
		}
	}
}

// writeText adds a text node with its white space collapsed, keeping a
// space where the node has one at either end.
func writeText(b *strings.Builder, t string) {
	words := strings.Join(strings.Fields(t), " ")
	if words == "" {
		if t != "" && b.Len() > 0 {
			b.WriteString(" ")
		}
		return
	}
	if strings.TrimLeftFunc(t, unicode.IsSpace) != t {
		b.WriteString(" ")
	}
	b.WriteString(words)
	if strings.TrimRightFunc(t, unicode.IsSpace) != t {
		b.WriteString(" ")
	}
}

// hidden are the elements whose content is not text for a reader.
var hidden = map[atom.Atom]bool{atom.Script: true, atom.Style: true, atom.Head: true, atom.Title: true,
	atom.Template: true, atom.Noscript: true}

// block are the elements that break lines.
var block = map[atom.Atom]bool{atom.P: true, atom.Div: true, atom.Br: true, atom.Tr: true, atom.Li: true,
	atom.H1: true, atom.H2: true, atom.H3: true, atom.H4: true, atom.H5: true, atom.H6: true,
	atom.Table: true, atom.Ul: true, atom.Ol: true, atom.Blockquote: true, atom.Hr: true, atom.Pre: true}

// tidy trims the spaces around lines and keeps at most one empty line in
// a row.
func tidy(s string) string {
	var out []string
	empty := 0
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			if empty++; empty > 1 || len(out) == 0 {
				continue
			}
		} else {
			empty = 0
		}
		out = append(out, line)
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}
