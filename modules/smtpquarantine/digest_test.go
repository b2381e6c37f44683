package smtpquarantine_test

import (
	"html"
	"io"
	"mime/quotedprintable"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpquarantine"
)

var (
	linkRE  = regexp.MustCompile(`(Release|Release and allow the sender): (http://\S+)`)
	fieldRE = regexp.MustCompile(`<input type="hidden" name="([a-z]+)" value="([^"]*)">`)
)

// digestLinks reads a delivered digest: its subject line and its links
// by message ID and action.
func digestLinks(t *testing.T, mail string) (subject string, links map[string]string) {
	t.Helper()
	head, body, ok := strings.Cut(mail, "\r\n\r\n")
	if !ok || !strings.Contains(head, "Content-Transfer-Encoding: quoted-printable") || !strings.Contains(head, "Auto-Submitted: auto-generated") {
		t.Fatalf("digest header: %s", head)
	}
	for _, line := range strings.Split(head, "\r\n") {
		if s, ok := strings.CutPrefix(line, "Subject: "); ok {
			subject = s
		}
	}
	text, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	links = make(map[string]string)
	for _, m := range linkRE.FindAllStringSubmatch(string(text), -1) {
		u, err := url.Parse(m[2])
		if err != nil {
			t.Fatal(err)
		}
		links[u.Query().Get("id")+" "+u.Query().Get("a")] = m[2]
	}
	return subject, links
}

// TestDigest: a digest goes to each recipient with quarantined mail,
// through the queue to the maildir; its release link shows a confirmation
// on GET (nothing released) and releases on the confirming POST; the
// allow link allow lists and releases. Changed, expired and foreign links
// are refused with 403. The digest state survives a restart (no second
// digest), and the next digest lists only what is new.
func TestDigest(t *testing.T) {
	e := start(t, func(web string) map[string]any {
		return map[string]any{"admins": []string{"alice"}, "digest": map[string]any{
			"base_url": web, "from": "quarantine@example.test", "every": "24h"}}
	})
	b1 := e.send("one@sender.test", "bob@example.test", "Subject: first quarantine-me", "one")
	b2 := e.send("two@sender.test", "bob@example.test", "Subject: =?utf-8?q?zw=C3=B6lf?= quarantine-me", "two")
	c1 := e.send("three@sender.test", "carol@example.org", "Subject: third quarantine-me", "three")

	// The digest times are given: the first run, which starts the period,
	// a day ago; the digest is due now.
	now := time.Now()
	if n, err := smtpquarantine.TriggerDigests(t.Context(), now.Add(-25*time.Hour)); err != nil || n != 0 {
		t.Fatalf("the first run (which starts the period): %d digests, %v", n, err)
	}
	if n, err := smtpquarantine.TriggerDigests(t.Context(), now.Add(-24*time.Hour)); err != nil || n != 0 {
		t.Fatalf("an hour later: %d digests, %v; want none before the period ends", n, err)
	}
	if n, err := smtpquarantine.TriggerDigests(t.Context(), now); err != nil || n != 2 {
		t.Fatalf("after a period: %d digests, %v; want 2 (bob, carol)", n, err)
	}
	subject, links := digestLinks(t, e.waitMail("bob@example.test", 1)[0])
	if subject != "Quarantine: 2 new messages" || len(links) != 4 {
		t.Fatalf("bob's digest: %q, links %v", subject, links)
	}
	carolMail := e.waitMail("carol@example.org", 1)[0]
	if _, cl := digestLinks(t, carolMail); len(cl) != 2 || cl[c1+" release"] == "" || strings.Contains(carolMail, b1) {
		t.Errorf("carol's digest lists other messages, or misses hers: %s", carolMail)
	}
	if !strings.Contains(e.waitMail("bob@example.test", 1)[0], "zw=C3=B6lf") {
		t.Error("the decoded subject is not in the digest")
	}

	// GET: a confirmation page, nothing released.
	release := links[b1+" release"]
	code, _, page := e.request("", http.MethodGet, strings.TrimPrefix(release, e.web), nil, nil)
	if code != http.StatusOK || !strings.Contains(page, "first quarantine-me") || !strings.Contains(page, `<form method="post" action="link"`) {
		t.Fatalf("GET of the release link: %d %s", code, page)
	}
	if s := e.state(b1); s != "quarantined" {
		t.Fatalf("a GET of the link changed the message: %s", s)
	}
	form := url.Values{}
	for _, m := range fieldRE.FindAllStringSubmatch(page, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}

	// Changed, foreign and expired links.
	u, _ := url.Parse(release)
	for name, change := range map[string]func(url.Values){
		"another message":   func(v url.Values) { v.Set("id", b2) },
		"another action":    func(v url.Values) { v.Set("a", "allow-sender") },
		"another recipient": func(v url.Values) { v.Set("r", "carol@example.org") },
		"a later expiry":    func(v url.Values) { v.Set("e", "4102444800") },
	} {
		v := u.Query()
		change(v)
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			var code int
			var page string
			if method == http.MethodGet {
				code, _, page = e.request("", method, "link?"+v.Encode(), nil, nil)
			} else {
				code, _, page = e.request("", method, "link", v, nil)
			}
			if code != http.StatusForbidden || !strings.Contains(page, "This link is not valid") {
				t.Errorf("%s link, %s: %d %s", name, method, code, page)
			}
		}
	}
	expired := smtpquarantine.SignLink(b1, "bob@example.test", "release", time.Now().Add(-time.Minute))
	if code, _, page := e.request("", http.MethodPost, "link", expired, nil); code != http.StatusForbidden || !strings.Contains(page, "expired") {
		t.Errorf("expired link: %d %s", code, page)
	}
	if s := e.state(b1); s != "quarantined" {
		t.Fatalf("a refused link changed the message: %s", s)
	}

	// The confirming POST releases.
	code, _, page = e.request("", http.MethodPost, "link", form, nil)
	if code != http.StatusOK || !strings.Contains(page, "Done") {
		t.Fatalf("POST of the confirmation: %d %s", code, page)
	}
	got := e.waitMail("bob@example.test", 2)
	if !strings.Contains(got[0]+got[1], "\r\n\r\none") {
		t.Errorf("the released message did not arrive: %q", got)
	}
	if code, _, _ := e.request("", http.MethodPost, "link", form, nil); code != http.StatusNotFound {
		t.Errorf("the same link again: %d, want 404 (no longer quarantined)", code)
	}
	allowURL, _ := url.Parse(links[b2+" allow-sender"])
	if code, _, page := e.request("", http.MethodPost, "link", allowURL.Query(), nil); code != http.StatusOK || !strings.Contains(page, "now accepted") {
		t.Errorf("the allow link: %d %s", code, page)
	}
	e.waitMail("bob@example.test", 3)

	// A restart does not send the digest again; the next one lists only
	// what was quarantined since.
	e.load()
	if n, err := smtpquarantine.TriggerDigests(t.Context(), now.Add(time.Minute)); err != nil || n != 0 {
		t.Fatalf("after a restart: %d digests, %v; want none", n, err)
	}
	b3 := e.send("four@sender.test", "bob@example.test", "Subject: fourth quarantine-me", "four")
	if n, err := smtpquarantine.TriggerDigests(t.Context(), now.Add(25*time.Hour)); err != nil || n != 1 {
		t.Fatalf("the next period: %d digests, %v; want 1 (bob's; carol has nothing new)", n, err)
	}
	var next string
	testMails := e.waitMail("bob@example.test", 4)
	for _, m := range testMails {
		if strings.Contains(m, "Subject: Quarantine: 1 new message\r\n") {
			next = m
		}
	}
	if _, l := digestLinks(t, next); len(l) != 2 || l[b3+" release"] == "" {
		t.Errorf("the second digest: %s", next)
	}
}

// TestDigestDomains: with domains, only recipients in them get digests.
func TestDigestDomains(t *testing.T) {
	e := start(t, func(web string) map[string]any {
		return map[string]any{"digest": map[string]any{"base_url": web, "domains": []string{"example.test"}}}
	})
	e.send("one@sender.test", "bob@example.test", "Subject: first quarantine-me", "one")
	e.send("two@sender.test", "carol@example.org", "Subject: second quarantine-me", "two")
	now := time.Now()
	if _, err := smtpquarantine.TriggerDigests(t.Context(), now.Add(-25*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := smtpquarantine.TriggerDigests(t.Context(), now); err != nil || n != 1 {
		t.Fatalf("%d digests, %v; want 1 (bob's)", n, err)
	}
	if mail := e.waitMail("bob@example.test", 1)[0]; !strings.Contains(mail, "From: <postmaster@mx.example.test>") {
		t.Errorf("the digest's default sender: %s", mail)
	}
}
