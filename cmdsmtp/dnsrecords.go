package cmdsmtp

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/dkimsign"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpdns"
)

func init() {
	subcommands = append(subcommands, dnsRecordsCommand)
}

func dnsRecordsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dns-records <domain>",
		Short: "Prints the DNS records a mail domain should publish, from the running config",
		Long: `
Asks the running Caddy (its admin API) which records <domain> should publish
for the gateway, and prints them as zone file lines: MX for the servers on
port 25, an SPF suggestion, the _mta-sts TXT record with the id of the
policy that the mta_sts handler serves, the _smtp._tls (TLS-RPT) TXT record,
TLSA 3 1 1 records when reuse_certificate_keys keeps the certificate key,
and the DKIM records of the dkim_sign check. A record that cannot be given
yet is a comment saying why.
`,
		Args: cobra.ExactArgs(1),
		RunE: caddycmd.WrapCommandFuncForCobra(cmdDNSRecords),
	}
	adminFlags(cmd)
	return cmd
}

// dnsRecords is what the command prints with --json.
type dnsRecords struct {
	Records []smtpdns.Record  `json:"records"`
	DKIM    []dkimsign.Record `json:"dkim"`
}

func cmdDNSRecords(fl caddycmd.Flags) (int, error) {
	q := "?domain=" + url.QueryEscape(fl.Arg(0))
	var out dnsRecords
	body, err := adminRequest(fl, http.MethodGet, "/smtp/dns-records"+q, nil)
	if err != nil {
		return 1, err
	}
	if err := json.Unmarshal(body, &out.Records); err != nil {
		return 1, fmt.Errorf("decoding the records: %v", err)
	}
	// The DKIM keys, if the dkim_sign module is built in and has any.
	if body, err := adminRequest(fl, http.MethodGet, "/smtp/dkim/records"+q, nil); err == nil {
		_ = json.Unmarshal(body, &out.DKIM)
	}
	if fl.Bool("json") {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return 0, enc.Encode(out)
	}
	printDNSRecords(os.Stdout, out)
	return 0, nil
}

// printDNSRecords writes zone file lines with the notes as comments.
func printDNSRecords(w io.Writer, recs dnsRecords) {
	for _, r := range recs.Records {
		if r.Value == "" {
			fmt.Fprintf(w, "; %s %s: %s\n", r.Name, r.Type, r.Note)
			continue
		}
		fmt.Fprintf(w, "%s %s %s ; %s\n", r.Name, r.Type, r.Value, r.Note)
	}
	if len(recs.DKIM) > 0 {
		printDKIMRecords(w, recs.DKIM, "")
	}
}
