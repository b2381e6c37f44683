package smtpstatus_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// chartSums is what the page's SVG charts show, summed per chart and
// series from the bars' data-value attributes.
const chartSums = `(() => {
	const out = {};
	for (const svg of document.querySelectorAll('svg[id]')) {
		const s = {};
		for (const r of svg.querySelectorAll('rect[data-series]')) {
			s[r.dataset.series] = (s[r.dataset.series] || 0) + Number(r.dataset.value);
		}
		out[svg.id] = s;
	}
	return out;
})()`

// busiestHour describes the bar of the 24-hour chart with the most
// deliveries (the run's hour) as drawn: its tooltip, the height on screen
// of its delivered segment and that segment's fill (from the style sheet,
// so only if the CSP let it in).
const busiestHour = `(() => {
	let rect = null;
	for (const r of document.querySelectorAll('#deliveries-24h rect[data-series=delivered]')) {
		if (!rect || Number(r.dataset.value) > Number(rect.dataset.value)) rect = r;
	}
	return {
		title: rect.parentNode.querySelector('title').textContent,
		values: Object.fromEntries([...rect.parentNode.querySelectorAll('rect')].map(r => [r.dataset.series, Number(r.dataset.value)])),
		height: rect.getBoundingClientRect().height,
		fill: getComputedStyle(rect).fill,
	};
})()`

type barInfo struct {
	Title  string         `json:"title"`
	Values map[string]int `json:"values"`
	Height float64        `json:"height"`
	Fill   string         `json:"fill"`
}

// TestBrowser loads the page in headless Chromium after the scripted
// run: it is refused without the login, and with it the charts carry the
// run's numbers, are drawn, and are styled. UPDATE_SCREENSHOTS=1 saves
// the page to docs/img/status.png.
func TestBrowser(t *testing.T) {
	ctx := testutil.Browser(t)
	g := startGateway(t)
	g.scriptedRun()

	tab, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// Without the login, basic_auth's challenge ends the load (nobody
	// answers it yet).
	_, err := chromedp.Run(tab, chromedp.NavigateResponse(g.url))
	if le, ok := errors.AsType[*chromedp.LoadError](err); !ok || le.ErrorText != "net::ERR_INVALID_AUTH_CREDENTIALS" {
		t.Errorf("without login: %v, want the auth challenge", err)
	}
	testutil.BrowserBasicAuth(t, ctx, testUser, testPassword)
	// (NavigateResponse sees no response through the Fetch domain that
	// answers the challenge: the page's title tells that it loaded.)
	if err := chromedp.Do(tab, chromedp.Navigate(g.url), chromedp.WaitVisible(chromedp.CSS("svg#deliveries-24h"))); err != nil {
		t.Fatalf("with login: %v", err)
	}
	if title, err := chromedp.Run(tab, chromedp.Title()); err != nil || title != "SMTP status" {
		t.Fatalf("with login: title %q (%v)", title, err)
	}

	sums, err := chromedp.Run(tab, chromedp.Evaluate[map[string]map[string]int](chartSums))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]int{
		"deliveries-24h":   {"delivered": 3, "deferred": 1, "bounced": 1},
		"deliveries-30d":   {"delivered": 3, "deferred": 1, "bounced": 1},
		"inbound-tls-30d":  {"tls": 2, "plaintext": 1},
		"outbound-tls-30d": {"tls": 1, "plaintext": 1},
	}
	for id, series := range want {
		for name, n := range series {
			if got := sums[id][name]; got != n {
				t.Errorf("chart %s shows %d %s, want %d", id, got, name, n)
			}
		}
	}
	if len(sums) != len(want) {
		t.Errorf("charts on the page: %v", sums)
	}

	bar, err := chromedp.Run(tab, chromedp.Evaluate[barInfo](busiestHour))
	if err != nil {
		t.Fatal(err)
	}
	// The run's hour has all of it (unless the run crossed the hour).
	want3 := fmt.Sprintf(": %d delivered, %d deferred, %d bounced", bar.Values["delivered"], bar.Values["deferred"], bar.Values["bounced"])
	if !strings.HasSuffix(bar.Title, want3) || bar.Values["delivered"] < 2 {
		t.Errorf("the busiest hour's tooltip is %q, its values %v", bar.Title, bar.Values)
	}
	if bar.Height < 10 {
		t.Errorf("the busiest hour's delivered bar is %.1f px high", bar.Height)
	}
	if bar.Fill != "rgb(46, 125, 50)" {
		t.Errorf("the delivered bar's fill is %q: the style sheet did not apply (CSP hash?)", bar.Fill)
	}
	table, err := chromedp.Run(tab, chromedp.Text(`table.shares tr[data-domain="plain.example"]`))
	if err != nil {
		t.Fatal(err)
	}
	if fields := strings.Fields(table); strings.Join(fields, " ") != "plain.example 0 1 0%" {
		t.Errorf("plain.example's row reads %q", table)
	}

	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join("..", "..", "docs", "img", "status.png")
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", out, len(png))
	}
}
