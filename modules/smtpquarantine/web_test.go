package smtpquarantine_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/lists"
)

// hostile is a quarantined message that tries to run script in the page:
// in its subject, in its sender's display and in an HTML body with a
// script, an event handler and a remote image.
const hostileSubject = `Subject: <script>alert("subject")</script> quarantine-me`

const hostileBody = "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
	`<html><body onload="alert('body')"><script>alert("body")</script><p>Your <b>invoice</b></p>` +
	`<img src="http://127.0.0.1:1/track.gif"><a href="https://evil.test/pay">pay now</a></body></html>` + "\r\n--b--\r\n"

var tokenRE = regexp.MustCompile(`name="token" value="([^"]+)"`)

// TestPages: the list and the detail page over HTTP behind basic_auth:
// scoping (a user sees their own recipients' messages, carol her users
// domain, the admin all, dave nothing: 403), escaping (the hostile
// message's markup is text, its HTML body is shown as text, the page's CSP
// forbids scripts), search and paging, and the POST buttons with their
// CSRF protection: release (delivered), delete (gone, not delivered; a
// message also for others only by an admin) and allow-sender (in the allow
// list, delivered).
func TestPages(t *testing.T) {
	e := start(t, func(string) map[string]any {
		return map[string]any{"admins": []string{"alice"}, "users": map[string]any{"carol": []string{"@example.org"}}, "page_size": 2}
	})
	hostile := e.send("phish@bad.test", "bob@example.test", hostileSubject+"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b", hostileBody)
	forCarol := e.send("news@lists.test", "carol@example.org", "Subject: carol's quarantine-me", "hello carol")
	other := e.send("friend@partner.test", "other@example.test", "Subject: other quarantine-me", "hello other")

	// Scoping.
	if code, _, _ := e.request("", http.MethodGet, "/", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("no login: %d, want 401 from basic_auth", code)
	}
	code, hdr, page := e.request("dave", http.MethodGet, "/", nil, nil)
	if code != http.StatusForbidden || !strings.Contains(page, "may see no quarantined mail") {
		t.Errorf("dave (no address): %d %s", code, page)
	}
	_, _, alice := e.request("alice", http.MethodGet, "/", nil, nil)
	_, _, alice2 := e.request("alice", http.MethodGet, "/?page=2", nil, nil)
	if !strings.Contains(alice, "3 quarantined messages") || !strings.Contains(alice, "m/"+other) || !strings.Contains(alice, "m/"+forCarol) ||
		strings.Contains(alice, "m/"+hostile) || !strings.Contains(alice2, "m/"+hostile) || !strings.Contains(alice, "Page 1 of 2") {
		t.Errorf("admin's list, newest first, 2 a page:\npage 1: %s\npage 2: %s", alice, alice2)
	}
	_, _, bob := e.request("bob@example.test", http.MethodGet, "/", nil, nil)
	if !strings.Contains(bob, "1 quarantined message.") || !strings.Contains(bob, "m/"+hostile) || strings.Contains(bob, "m/"+other) {
		t.Errorf("bob's list: %s", bob)
	}
	_, _, carol := e.request("carol", http.MethodGet, "/?q=CAROL", nil, nil)
	if !strings.Contains(carol, "m/"+forCarol) || strings.Contains(carol, "m/"+hostile) {
		t.Errorf("carol's search: %s", carol)
	}
	if _, _, s := e.request("alice", http.MethodGet, "/?q=partner.test", nil, nil); !strings.Contains(s, "m/"+other) || strings.Contains(s, "m/"+forCarol) {
		t.Errorf("admin's search on a sender: %s", s)
	}
	if code, _, _ := e.request("bob@example.test", http.MethodGet, "/m/"+other, nil, nil); code != http.StatusNotFound {
		t.Errorf("bob opens another user's message: %d, want 404", code)
	}

	// Escaping and the security headers.
	code, hdr, page = e.request("bob@example.test", http.MethodGet, "/m/"+hostile, nil, nil)
	if code != http.StatusOK {
		t.Fatalf("bob's message: %d %s", code, page)
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "style-src 'self'") ||
		!strings.Contains(csp, "form-action 'self'") || strings.Contains(csp, "script-src") {
		t.Errorf("Content-Security-Policy: %q", csp)
	}
	for _, bad := range []string{"<script", "<img", "onload=", `href="https://evil.test`} {
		if strings.Contains(page, bad) {
			t.Errorf("the message's markup %q reached the page:\n%s", bad, page)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(&#34;subject&#34;)&lt;/script&gt; quarantine-me", "Your invoice", "pay now [https://evil.test/pay]",
		"HTML shown as plain text", "looks like spam", "spam_test", "score 9.5"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}

	// CSRF: no token, another user's token, a cross-site POST.
	m := tokenRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no token in the page:\n%s", page)
	}
	bobToken := m[1]
	_, _, carolPage := e.request("carol", http.MethodGet, "/m/"+forCarol, nil, nil)
	carolToken := tokenRE.FindStringSubmatch(carolPage)[1]
	for name, c := range map[string]struct {
		token  string
		header map[string]string
	}{
		"no token":          {"", nil},
		"carol's token":     {carolToken, nil},
		"a cross-site POST": {bobToken, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		"another origin":    {bobToken, map[string]string{"Origin": "https://evil.test"}},
	} {
		code, _, _ := e.request("bob@example.test", http.MethodPost, "/m/"+hostile+"/release", url.Values{"token": {c.token}}, c.header)
		if code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, code)
		}
	}
	if code, _, _ := e.request("carol", http.MethodPost, "/m/"+hostile+"/release", url.Values{"token": {carolToken}}, nil); code != http.StatusNotFound {
		t.Errorf("carol releases bob's message: %d, want 404", code)
	}
	if code, _, _ := e.request("bob@example.test", http.MethodGet, "/m/"+hostile+"/release", nil, nil); code != http.StatusMethodNotAllowed {
		t.Errorf("a GET of an action: %d, want 405", code)
	}
	if s := e.state(hostile); s != "quarantined" {
		t.Fatalf("after refused requests the message is %s", s)
	}

	// The actions.
	code, hdr, _ = e.request("bob@example.test", http.MethodPost, "/m/"+hostile+"/release", url.Values{"token": {bobToken}},
		map[string]string{"Origin": strings.TrimSuffix(e.web, "/"), "Sec-Fetch-Site": "same-origin"})
	if code != http.StatusSeeOther || hdr.Get("Location") != "../../?done=release&id="+hostile {
		t.Fatalf("release: %d, Location %q", code, hdr.Get("Location"))
	}
	if got := e.waitMail("bob@example.test", 1)[0]; !strings.Contains(got, "Your <b>invoice</b>") {
		t.Errorf("the released message: %s", got)
	}
	if _, _, s := e.request("bob@example.test", http.MethodGet, "/?done=release&id="+hostile, nil, nil); !strings.Contains(s, "Message "+hostile+" released") {
		t.Errorf("the notice after the release: %s", s)
	}
	if code, _, _ := e.request("carol", http.MethodPost, "/m/"+forCarol+"/delete", url.Values{"token": {carolToken}}, nil); code != http.StatusSeeOther {
		t.Errorf("delete: %d", code)
	}
	if s := e.state(forCarol); s != "gone" {
		t.Errorf("the deleted message is %s", s)
	}
	_, _, alicePage := e.request("alice", http.MethodGet, "/m/"+other, nil, nil)
	aliceToken := tokenRE.FindStringSubmatch(alicePage)[1]
	if code, _, _ := e.request("alice", http.MethodPost, "/m/"+other+"/allow-sender", url.Values{"token": {aliceToken}}, nil); code != http.StatusSeeOther {
		t.Errorf("allow-sender: %d", code)
	}
	e.waitMail("other@example.test", 1)
	allow, err := caddy.ActiveContext().Storage().Load(t.Context(), lists.StorageKey(lists.Allow))
	if err != nil || !strings.Contains(string(allow), `"friend@partner.test"`) || !strings.Contains(string(allow), "allowed by user alice") {
		t.Errorf("allow list: %s, %v", allow, err)
	}
	if len(e.mails("carol@example.org")) != 0 {
		t.Error("the deleted message was delivered")
	}

	// A message also for others: bob sees it, but only an admin may
	// delete it.
	shared := e.send("friend@partner.test", "bob@example.test,other@example.test", "Subject: shared quarantine-me", "for both")
	_, _, page = e.request("bob@example.test", http.MethodGet, "/m/"+shared, nil, nil)
	if !strings.Contains(page, "/release") || strings.Contains(page, "/delete") {
		t.Errorf("bob's view of a shared message offers delete, or no release:\n%s", page)
	}
	if code, _, _ := e.request("bob@example.test", http.MethodPost, "/m/"+shared+"/delete", url.Values{"token": {bobToken}}, nil); code != http.StatusForbidden {
		t.Errorf("bob deletes a shared message: %d, want 403", code)
	}
	if code, _, _ := e.request("alice", http.MethodPost, "/m/"+shared+"/delete", url.Values{"token": {aliceToken}}, nil); code != http.StatusSeeOther || e.state(shared) != "gone" {
		t.Errorf("the admin deletes a shared message: %d, state %s", code, e.state(shared))
	}
}
