package smtpstatus

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"strings"
	"time"
)

// pageCSS is the page's only style sheet. The Content-Security-Policy
// allows it by its hash and allows nothing else: no script, no image, no
// other style, no form, no framing.
const pageCSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:62em;padding:0 1em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
.summary td{text-align:left}
svg{display:block;max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#555}
.delivered,.tls{fill:#2e7d32}.deferred{fill:#f9a825}.bounced,.plaintext{fill:#c62828}
.axis{stroke:#999;stroke-width:1}
.legend span{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em;vertical-align:middle}
.legend .delivered,.legend .tls{background:#2e7d32}.legend .deferred{background:#f9a825}
.legend .bounced,.legend .plaintext{background:#c62828}
.low{color:#c62828;font-weight:bold}
.note{color:#666}
`

// contentSecurityPolicy is sent with the HTML page.
var contentSecurityPolicy = "default-src 'none'; style-src '" + cssHash() + "'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func cssHash() string {
	sum := sha256.Sum256([]byte(pageCSS))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

// Chart geometry, in SVG user units.
const (
	chartWidth  = 720
	chartHeight = 180
	plotLeft    = 44 // room for the y axis labels
	plotBottom  = 20 // room for the x axis labels
	plotTop     = 8
)

// chart is one stacked bar chart.
type chart struct {
	ID, Title string
	Series    []string // CSS class and data-series of each segment, bottom up
	Max       int64    // the top of the y axis
	Bars      []bar
	XLabels   []axisLabel
}

// bar is one bucket's stack; Key identifies the bucket (data-bucket).
type bar struct {
	Key, Title string
	Segments   []segment
}

type segment struct {
	Series     string
	Value      int64
	X, Y, W, H float64
}

type axisLabel struct {
	X    float64
	Text string
}

// The charts' constant lines.
func (chart) Width() int     { return chartWidth }
func (chart) Height() int    { return chartHeight }
func (chart) PlotLeft() int  { return plotLeft }
func (chart) Baseline() int  { return chartHeight - plotBottom }
func (chart) PlotRight() int { return chartWidth }
func (chart) PlotTop() int   { return plotTop }
func (chart) LabelY() int    { return chartHeight - 5 }
func (chart) MaxLabelY() int { return plotTop + 10 }

// newChart lays out points as stacked bars of the given series; values
// returns a point's value per series, labelEvery puts an x label under
// every so many bars.
func newChart(id, title string, points []Point, series []string, values func(Point) []int64, key, label func(time.Time) string, labelEvery int) chart {
	c := chart{ID: id, Title: title, Series: series, Max: 1}
	for _, p := range points {
		var sum int64
		for _, v := range values(p) {
			sum += v
		}
		c.Max = max(c.Max, sum)
	}
	c.Max = niceCeil(c.Max)
	plotH := float64(chartHeight - plotBottom - plotTop)
	slot := float64(chartWidth-plotLeft) / float64(len(points))
	for i, p := range points {
		x := float64(plotLeft) + float64(i)*slot
		b := bar{Key: key(p.Start)}
		y := float64(chartHeight - plotBottom)
		var parts []string
		for j, v := range values(p) {
			h := plotH * float64(v) / float64(c.Max)
			y -= h
			b.Segments = append(b.Segments, segment{Series: series[j], Value: v, X: x + 1, Y: y, W: slot - 2, H: h})
			parts = append(parts, fmt.Sprintf("%d %s", v, series[j]))
		}
		b.Title = label(p.Start) + ": " + strings.Join(parts, ", ")
		c.Bars = append(c.Bars, b)
		if i%labelEvery == 0 {
			c.XLabels = append(c.XLabels, axisLabel{X: x + slot/2, Text: label(p.Start)})
		}
	}
	return c
}

// niceCeil rounds n up to 1, 2 or 5 times a power of ten.
func niceCeil(n int64) int64 {
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if m*p >= n {
				return m * p
			}
		}
	}
}

// charts returns the page's charts for s.
func charts(s *Status) []chart {
	results := []string{"delivered", "deferred", "bounced"}
	tls := []string{"tls", "plaintext"}
	byResult := func(p Point) []int64 { return []int64{p.Delivered, p.Deferred, p.Bounced} }
	hourKey := func(t time.Time) string { return t.Format("2006-01-02T15Z") }
	hourLabel := func(t time.Time) string { return t.Format("15:04") }
	dayKey := func(t time.Time) string { return t.Format("2006-01-02") }
	dayLabel := func(t time.Time) string { return t.Format("Jan 2") }
	return []chart{
		newChart("deliveries-24h", "Deliveries per hour, last 24 hours (UTC)", s.Hours, results, byResult, hourKey, hourLabel, 4),
		newChart("deliveries-30d", "Deliveries per day, last 30 days (UTC)", s.Days, results, byResult, dayKey, dayLabel, 5),
		newChart("inbound-tls-30d", "Received messages per day by TLS of the sending client", s.Days, tls,
			func(p Point) []int64 { return []int64{p.In.TLS, p.In.Plain} }, dayKey, dayLabel, 5),
		newChart("outbound-tls-30d", "Delivered recipients per day by TLS of the delivery", s.Days, tls,
			func(p Point) []int64 { return []int64{p.Out.TLS, p.Out.Plain} }, dayKey, dayLabel, 5),
	}
}

// pageData is what the template gets.
type pageData struct {
	*Status
	Charts []chart
}

var pageTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"coord":    func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"age":      formatAge,
	"percent":  func(p float64) string { return fmt.Sprintf("%.0f%%", p) },
	"css":      func() template.CSS { return template.CSS(pageCSS) },
	"datetime": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>SMTP status</title>
<style>{{css}}</style>
</head>
<body>
<h1>SMTP status</h1>
<p class="note">Generated {{datetime .Generated}} from the counters of {{.Nodes}} node{{if ne .Nodes 1}}s{{end}}. Deliveries count recipients; received mail counts messages.</p>

<h2>Queue</h2>
{{with .Queue}}<table class="summary" id="queue">
<tr><th>Messages</th><td id="queue-messages">{{.Messages}}</td></tr>
<tr><th>Oldest</th><td id="queue-oldest">{{if .Oldest}}{{age .OldestSeconds}} ({{datetime .Oldest}}){{else}}none{{end}}</td></tr>
</table>{{else}}<p id="queue">No running smtp app in this config.</p>{{end}}

<h2>Deliveries</h2>
<table id="totals">
<tr><th></th><th>delivered</th><th>deferred</th><th>bounced</th></tr>
<tr><td>last 24 hours</td><td>{{.Totals24h.Delivered}}</td><td>{{.Totals24h.Deferred}}</td><td>{{.Totals24h.Bounced}}</td></tr>
<tr><td>last 30 days</td><td>{{.Totals30d.Delivered}}</td><td>{{.Totals30d.Deferred}}</td><td>{{.Totals30d.Bounced}}</td></tr>
</table>
{{range .Charts}}
<h2>{{.Title}}</h2>
<p class="legend">{{range .Series}}<span class="{{.}}"></span>{{.}}{{end}}</p>
<svg id="{{.ID}}" viewBox="0 0 {{.Width}} {{.Height}}" width="{{.Width}}" height="{{.Height}}" role="img" aria-label="{{.Title}}" data-max="{{.Max}}">
<line class="axis" x1="{{.PlotLeft}}" y1="{{.Baseline}}" x2="{{.PlotRight}}" y2="{{.Baseline}}"/>
<line class="axis" x1="{{.PlotLeft}}" y1="{{.PlotTop}}" x2="{{.PlotLeft}}" y2="{{.Baseline}}"/>
<text x="{{.PlotLeft}}" dx="-4" y="{{.MaxLabelY}}" text-anchor="end">{{.Max}}</text>
<text x="{{.PlotLeft}}" dx="-4" y="{{.Baseline}}" text-anchor="end">0</text>
{{range .Bars}}<g data-bucket="{{.Key}}"><title>{{.Title}}</title>{{range .Segments}}<rect class="{{.Series}}" data-series="{{.Series}}" data-value="{{.Value}}" x="{{coord .X}}" y="{{coord .Y}}" width="{{coord .W}}" height="{{coord .H}}"/>{{end}}</g>
{{end}}{{$c := .}}{{range .XLabels}}<text x="{{coord .X}}" y="{{$c.LabelY}}" text-anchor="middle">{{.Text}}</text>
{{end}}</svg>
{{end}}
<h2>Inbound TLS by sending domain, last 30 days</h2>
<p class="note">Messages received, by the domain of MAIL FROM and whether the client used TLS: the partners that still send in plaintext come first.</p>
{{template "shares" .Inbound}}
<h2>Outbound TLS by recipient domain, last 30 days</h2>
<p class="note">Recipients delivered over the network, by whether the delivery used TLS.</p>
{{template "shares" .Outbound}}
</body>
</html>
{{define "shares"}}{{if .}}<table class="shares">
<tr><th>domain</th><th>TLS</th><th>plaintext</th><th>TLS share</th></tr>
{{range .}}<tr data-domain="{{.Domain}}"><td>{{.Domain}}</td><td>{{.TLS}}</td><td>{{.Plain}}</td><td{{if lt .Percent 100.0}} class="low"{{end}}>{{percent .Percent}}</td></tr>
{{end}}</table>{{else}}<p>No mail yet.</p>{{end}}{{end}}`))

// formatAge writes a duration in seconds as the largest two units.
func formatAge(seconds int64) string {
	d := time.Duration(seconds) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", seconds)
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", seconds/60, seconds%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh %dm", seconds/3600, seconds%3600/60)
	}
	return fmt.Sprintf("%dd %dh", seconds/86400, seconds%86400/3600)
}
