// Package smtpdns is the `admin.api.smtp_dns` module: the DNS records a
// mail domain served by the running config should publish, for `caddy smtp
// dns-records <domain>`.
//
//	GET /smtp/dns-records?domain=<d>
package smtpdns

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/net/idna"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/adminhttp"
	"github.com/caddy-smtp/caddy-smtp/modules/mtasts"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the records.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.smtp_dns",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/smtp/dns-records", Handler: caddy.AdminHandlerFunc(serve)}}
}

// Record is one DNS record to publish, or (with an empty Value) one that
// cannot be given yet, with Note saying why.
type Record struct {
	// Name is the owner name, fully qualified with the trailing dot.
	Name string `json:"name"`
	// Type is MX, TXT, TLSA or CNAME.
	Type string `json:"type"`
	// Value is the record data in zone file syntax.
	Value string `json:"value,omitempty"`
	// Note says what the record is for and what to check.
	Note string `json:"note,omitempty"`
}

func serve(w http.ResponseWriter, r *http.Request) error {
	if err := adminhttp.Allow(w, r, http.MethodGet); err != nil {
		return err
	}
	domain, err := idna.Lookup.ToASCII(strings.TrimSuffix(strings.TrimSpace(r.URL.Query().Get("domain")), "."))
	if err != nil || domain == "" || !strings.Contains(domain, ".") {
		return adminhttp.Error(http.StatusBadRequest, fmt.Errorf("want ?domain= with a mail domain such as example.com"))
	}
	app, err := caddy.ActiveContext().AppIfConfigured("smtp")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return adminhttp.Error(http.StatusNotFound, errors.New("no smtp app in the running config"))
	}
	if err != nil {
		return adminhttp.Error(http.StatusInternalServerError, err)
	}
	return adminhttp.WriteJSON(w, Records(app.(*smtpapp.App), domain, mtasts.Policies()))
}

// Records returns what domain should publish for the app: MX records for
// the servers that take mail on port 25, an SPF suggestion, the MTA-STS
// and TLS-RPT TXT records, and TLSA records for servers whose certificate
// key is kept across renewals.
func Records(app *smtpapp.App, domain string, policies []mtasts.Policy) []Record {
	fq := func(name string) string { return strings.TrimSuffix(name, ".") + "." }
	var out []Record
	hosts, on25 := mxHosts(app)
	note := "the servers listening on port 25"
	if !on25 {
		note = "no server listens on port 25 (behind a port forward or proxy?): these are the servers that need no login"
	}
	for i, h := range hosts {
		out = append(out, Record{Name: fq(domain), Type: "MX", Value: fmt.Sprintf("%d %s", 10*(i+1), fq(h)), Note: note + "; each name needs A/AAAA records of its public addresses"})
	}
	out = append(out, Record{Name: fq(domain), Type: "TXT", Value: `"v=spf1 mx -all"`,
		Note: "SPF suggestion when the MX hosts also send the domain's mail; add include: or ip4:/ip6: for every other sender (source_addresses, providers), or use ~all while unsure"})
	switch len(policies) {
	case 0:
		out = append(out, Record{Name: fq("_mta-sts." + domain), Type: "TXT",
			Note: "no mta_sts handler in the running config: serve one in a site for mta-sts." + domain + " to publish an MTA-STS policy"})
	default:
		for _, p := range policies {
			out = append(out, Record{Name: fq("_mta-sts." + domain), Type: "TXT", Value: fmt.Sprintf(`"v=STSv1; id=%s"`, p.ID),
				Note: fmt.Sprintf("MTA-STS policy mode %s for mx %s, served at https://mta-sts.%s/.well-known/mta-sts.txt (that site needs its own A/AAAA or CNAME record)", p.Mode, strings.Join(p.MX, " "), domain)})
		}
	}
	out = append(out, Record{Name: fq("_smtp._tls." + domain), Type: "TXT", Value: fmt.Sprintf(`"v=TLSRPTv1; rua=mailto:tlsrpt@%s"`, domain),
		Note: "TLS-RPT: where other senders report TLS failures delivering to you; use an address that is read"})
	for _, h := range hosts {
		out = append(out, tlsaRecord(app, h))
	}
	return out
}

// mxHosts returns the hostnames of the servers with a port 25 listener,
// or, when none has one, of those that take mail without a login.
func mxHosts(app *smtpapp.App) (hosts []string, on25 bool) {
	var open []string
	for _, srv := range app.Servers {
		if srv == nil {
			continue
		}
		if !srv.RequireAuth && !slices.Contains(open, srv.Hostname) {
			open = append(open, srv.Hostname)
		}
		for _, l := range srv.Listen {
			na, err := caddy.ParseNetworkAddress(l.Address)
			if err == nil && na.StartPort <= 25 && 25 <= na.EndPort && !slices.Contains(hosts, srv.Hostname) {
				hosts = append(hosts, srv.Hostname)
			}
		}
	}
	slices.Sort(hosts)
	slices.Sort(open)
	if len(hosts) == 0 {
		return open, false
	}
	return hosts, true
}

// tlsaRecord is the DANE-EE record (3 1 1) of host's current certificate,
// when its key survives renewals.
func tlsaRecord(app *smtpapp.App, host string) Record {
	rec := Record{Name: "_25._tcp." + strings.TrimSuffix(host, ".") + ".", Type: "TLSA"}
	if !app.ReuseCertificateKeys {
		rec.Note = "not pinned: the certificate key changes at every renewal; set reuse_certificate_keys to publish 3 1 1, or publish 2 1 1 records of your CA's intermediates (caddy smtp tlsa)"
		return rec
	}
	chain := smtpapp.CurrentChain(host)
	if chain == nil {
		rec.Note = "no certificate for " + host + " is loaded yet"
		return rec
	}
	leaf := chain[0]
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	rec.Value = "3 1 1 " + hex.EncodeToString(sum[:])
	rec.Note = "DANE-EE for the current key, kept across renewals (reuse_certificate_keys); publish only in a DNSSEC-signed zone"
	return rec
}

// Interface guards
var _ caddy.AdminRouter = (*adminAPI)(nil)
