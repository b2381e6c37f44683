package smtpapp

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// tlsReports collects the outcome of outbound TLS sessions per policy
// domain for TLS-RPT (RFC 8460). It lives in the process, not in one
// config, so a reload loses no day's results.
var tlsReports = &tlsupgrade.TLSRPTRecorder{}

// TLSReporting configures the daily TLS-RPT reports (RFC 8460) this
// gateway sends to the domains it delivers to that ask for them (a TXT
// record `_smtp._tls.<domain>` with `rua=mailto:...` or `rua=https://...`).
type TLSReporting struct {
	// Organization names us in the reports. Required.
	Organization string `json:"organization,omitempty"`
	// Contact is how report receivers reach us (an email address or URL).
	// Required.
	Contact string `json:"contact,omitempty"`
	// From is the sender address of mailed reports. Default:
	// `tlsrpt-noreply@<hostname>`.
	From string `json:"from,omitempty"`
	// Resolvers look up the `_smtp._tls` records. Default: the servers in
	// /etc/resolv.conf.
	Resolvers []string `json:"resolvers,omitempty"`
}

// tlsrptLoop sends yesterday's reports shortly after every UTC midnight
// until ctx ends.
func (a *App) tlsrptLoop(ctx context.Context) {
	for {
		now := time.Now().UTC()
		next := now.Truncate(24 * time.Hour).Add(24*time.Hour + 5*time.Minute)
		t := time.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		end := next.Truncate(24 * time.Hour)
		a.sendTLSReports(ctx, end.Add(-24*time.Hour), end)
		a.saveTLSRPT() // the counts start afresh
	}
}

// The day's TLS-RPT counts are kept in Caddy storage, so that a restart
// does not lose them: saved every tlsrptSaveInterval when they changed and
// when a config stops, restored once per process when the first config
// with tls_reporting starts. A crash loses at most the last interval.
const tlsrptSaveInterval = time.Minute

var (
	tlsrptRestore sync.Once
	tlsrptSaved   struct {
		sync.Mutex
		gen   uint64
		valid bool
	}
)

// tlsrptStorageKey is where this gateway's counts live in Caddy storage;
// with a storage shared by several gateways, each has its own.
func (a *App) tlsrptStorageKey() string {
	return path.Join("smtp", "tlsrpt", a.Hostname+".json")
}

// restoreTLSRPT adds the counts a previous process saved to the recorder.
func (a *App) restoreTLSRPT() {
	tlsrptRestore.Do(func() {
		log := a.logger.Named("tlsrpt")
		data, err := a.ctx.Storage().Load(a.ctx, a.tlsrptStorageKey())
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		var sets []tlsupgrade.TLSRPTPolicySet
		if err == nil {
			err = json.Unmarshal(data, &sets)
		}
		if err != nil {
			log.Warn("restoring TLS-RPT counts", zap.String("key", a.tlsrptStorageKey()), zap.Error(err))
			return
		}
		tlsReports.Merge(sets)
		log.Info("TLS-RPT counts restored", zap.Int("policies", len(sets)))
	})
}

// saveTLSRPT stores the recorder's counts if they changed since the last
// save.
func (a *App) saveTLSRPT() {
	tlsrptSaved.Lock()
	defer tlsrptSaved.Unlock()
	sets, gen := tlsReports.Sets()
	if tlsrptSaved.valid && gen == tlsrptSaved.gen {
		return
	}
	data, err := json.Marshal(sets)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = a.ctx.Storage().Store(ctx, a.tlsrptStorageKey(), data)
		cancel()
	}
	if err != nil {
		a.logger.Named("tlsrpt").Error("saving TLS-RPT counts", zap.String("key", a.tlsrptStorageKey()), zap.Error(err))
		return
	}
	tlsrptSaved.gen, tlsrptSaved.valid = gen, true
}

// tlsrptSaveLoop saves the counts every tlsrptSaveInterval until ctx ends.
func (a *App) tlsrptSaveLoop(ctx context.Context) {
	t := time.NewTicker(tlsrptSaveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.saveTLSRPT()
		}
	}
}

// sendTLSReports sends the reports for the period to every domain with a
// TLS-RPT record: by mail through our own queue, or by HTTPS POST.
func (a *App) sendTLSReports(ctx context.Context, start, end time.Time) {
	rep := a.TLSReporting
	log := a.logger.Named("tlsrpt")
	r, err := resolver.New(rep.Resolvers, 0)
	if err != nil {
		log.Error("resolver", zap.Error(err))
		return
	}
	from := rep.From
	if from == "" {
		from = "tlsrpt-noreply@" + a.Hostname
	}
	for _, report := range tlsReports.Reports(rep.Organization, rep.Contact, start, end) {
		domain := report.Policies[0].Policy.Domain
		ruas, err := tlsupgrade.LookupTLSRPT(ctx, r, domain)
		if err != nil || len(ruas) == 0 {
			continue // the domain wants no reports
		}
		gz, err := report.Gzip()
		if err != nil {
			log.Error("encoding report", zap.String("domain", domain), zap.Error(err))
			continue
		}
		for _, rua := range ruas {
			if addr, ok := strings.CutPrefix(rua, "mailto:"); ok {
				err = a.mailTLSReport(from, addr, domain, &report, gz)
			} else {
				err = postTLSReport(ctx, r, rua, gz)
			}
			if err != nil {
				log.Error("sending TLS report", zap.String("domain", domain), zap.String("rua", rua), zap.Error(err))
				continue
			}
			log.Info("TLS report sent", zap.String("domain", domain), zap.String("rua", rua), zap.String("report_id", report.ReportID))
		}
	}
}

// mailTLSReport queues a report as the message RFC 8460 section 5.3
// describes: multipart/report; report-type=tlsrpt with the gzipped JSON.
func (a *App) mailTLSReport(from, to, domain string, report *tlsupgrade.TLSRPTReport, gz []byte) error {
	if i := strings.IndexByte(to, '?'); i >= 0 {
		to = to[:i]
	}
	var b bytes.Buffer
	boundary := "tlsrpt-" + queue.NewID()
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\n", from, to)
	fmt.Fprintf(&b, "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n", domain, report.OrganizationName, report.ReportID)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n", time.Now().Format(time.RFC1123Z), queue.NewID(), a.Hostname)
	fmt.Fprintf(&b, "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n", domain, report.OrganizationName)
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThis is an aggregate TLS report from %s (RFC 8460).\r\n\r\n", boundary, report.OrganizationName)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: %s\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"%s\"\r\n\r\n",
		boundary, tlsupgrade.TLSRPTMediaTypeGzip, report.Filename(a.Hostname))
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--" + boundary + "--\r\n")

	id := queue.NewID()
	w, err := a.queue.Create(id)
	if err != nil {
		return err
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		w.Abort()
		return err
	}
	return a.queue.Commit(w, &queue.Message{
		From:       from,
		Recipients: []*queue.Recipient{{Addr: to, Notify: []string{"NEVER"}}},
		Arrived:    time.Now(),
		Client:     queue.ClientInfo{Helo: a.Hostname},
	})
}

// postTLSReport sends a report to an https: rua (RFC 8460 section 5.4). The
// report server's name is looked up with r, the resolver that found the
// TLS-RPT record, not with the system resolver, and no proxy from the
// environment is used.
func postTLSReport(ctx context.Context, r tlsupgrade.IPResolver, url string, gz []byte) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(gz))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mime.FormatMediaType(tlsupgrade.TLSRPTMediaTypeGzip, nil))
	tr := &http.Transport{
		DialContext:         tlsupgrade.ResolvingDialer(r, nil),
		TLSHandshakeTimeout: 15 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
