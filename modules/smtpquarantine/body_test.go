package smtpquarantine

import (
	"strings"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/quarantineview"
)

func render(t *testing.T, msg string) renderedBody {
	t.Helper()
	head, body, _ := strings.Cut(msg, "\r\n\r\n")
	return renderBody(quarantineview.ParseHeader([]byte(head)), []byte(body))
}

// TestRenderBody: the text/plain part is shown decoded (transfer encoding
// and charset); HTML is turned into text without its scripts, styles and
// markup; attachments are listed, not shown.
func TestRenderBody(t *testing.T) {
	plain := render(t, "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe, soft=\r\n break\r\n")
	if plain.Text != "Grüße, soft break\r\n" || plain.FromHTML {
		t.Errorf("quoted-printable latin-1: %+v", plain)
	}
	alt := render(t, "Content-Type: multipart/mixed; boundary=b1\r\n\r\n"+
		"--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"+
		"--b2\r\nContent-Type: text/html\r\n\r\n<p>the html</p>\r\n"+
		"--b2\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\ndGhlIHBs\r\nYWluIHRleHQ=\r\n"+
		"--b2--\r\n"+
		"--b1\r\nContent-Type: application/pdf; name=\"=?utf-8?q?Rechnung_=C3=BC.pdf?=\"\r\nContent-Disposition: attachment\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"+
		"--b1--\r\n")
	if alt.Text != "the plain text" || len(alt.Parts) != 1 {
		t.Fatalf("multipart: %+v", alt)
	}
	if p := alt.Parts[0]; p.Type != "application/pdf" || p.Filename != "Rechnung ü.pdf" || p.Size != 5 {
		t.Errorf("attachment: %+v", p)
	}
	html := render(t, "Content-Type: text/html; charset=utf-8\r\n\r\n<html><head><title>T</title><style>p{}</style></head><body>"+
		"<script>alert('x')</script><p>Dear <b>customer</b>,</p><p>click <a href=\"https://evil.test/x\">here</a>"+
		"<img src=\"https://tracker.test/p.gif\"></p><div>&lt;not a tag&gt;</div></body></html>")
	want := "Dear customer,\n\nclick here [https://evil.test/x]\n\n<not a tag>"
	if !html.FromHTML || html.Text != want {
		t.Errorf("html as text: %q, want %q", html.Text, want)
	}
	if strings.Contains(html.Text, "alert") || strings.Contains(html.Text, "tracker") {
		t.Errorf("html as text kept script or image: %q", html.Text)
	}
	long := render(t, "Content-Type: text/plain; charset=utf-8\r\n\r\n"+strings.Repeat("ü", maxTextShown))
	if !long.Truncated || len(long.Text) > maxTextShown || !strings.HasSuffix(long.Text, "ü") {
		t.Errorf("a long text is cut at %d bytes, on a character: truncated %v, %d bytes", maxTextShown, long.Truncated, len(long.Text))
	}
}
