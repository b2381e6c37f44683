package smtpquarantine_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// screenshot is the README's picture of the list page; the browser test
// rewrites it with UPDATE_SCREENSHOTS=1.
const screenshot = "../../docs/img/quarantine.png"

// TestBrowser: in headless Chromium, a user logs in through basic_auth's
// challenge, sees the quarantined messages (a hostile subject stays text:
// its script does not run), opens one, releases it with the button, sees
// the notice, and the message arrives in the maildir.
func TestBrowser(t *testing.T) {
	e := start(t, func(string) map[string]any {
		return map[string]any{"admins": []string{"alice"}}
	})
	e.send("billing@paypa1.test", "bob@example.test", `Subject: <script>document.title="pwned"</script> Your account is locked quarantine-me`, "log in at once")
	e.send("newsletter@shop.test", "carol@example.org", "Subject: 70% off everything this weekend quarantine-me", "sale")
	id := e.send("friend@partner.test", "bob@example.test", "Subject: Minutes of Tuesday's meeting quarantine-me", "the minutes")

	ctx := testutil.Browser(t)
	testutil.BrowserBasicAuth(t, ctx, "alice", password)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1100, 520), chromedp.Navigate(e.web), chromedp.WaitVisible(chromedp.CSS("table.list"))); err != nil {
		t.Fatalf("the list page: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil || title != "Quarantine" {
		t.Errorf("title %q (%v): a script of a subject ran, or the page is another", title, err)
	}
	// The style sheet loads under the page's CSP (style-src 'self').
	if bg, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector("header")).backgroundColor`)); err != nil || bg != "rgb(36, 49, 63)" {
		t.Errorf("header background %q (%v): the style sheet did not apply", bg, err)
	}
	list, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("table.list")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<script>document.title="pwned"</script> Your account is locked`, "Minutes of Tuesday's meeting", "friend@partner.test", "looks like spam", "score 9.5"} {
		if !strings.Contains(list, want) {
			t.Errorf("the list lacks %q:\n%s", want, list)
		}
	}
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(screenshot), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(screenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`a[href="m/`+id+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("button.release")),
		chromedp.Click(chromedp.CSS("button.release")),
		chromedp.WaitVisible(chromedp.CSS("p.notice")),
	); err != nil {
		t.Fatalf("opening and releasing the message: %v", err)
	}
	notice, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("p.notice")))
	if err != nil || !strings.Contains(notice, "Message "+id+" released") {
		t.Errorf("notice %q, %v", notice, err)
	}
	if got := e.waitMail("bob@example.test", 1)[0]; !strings.Contains(got, "the minutes") {
		t.Errorf("the released message: %s", got)
	}
	testutil.Eventually(t, 10*time.Second, "the delivered message out of the queue", func() bool { return e.state(id) == "gone" })
}
