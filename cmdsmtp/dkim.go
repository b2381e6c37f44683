package cmdsmtp

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/dkimsign"
)

func init() {
	subcommands = append(subcommands, dkimCommand)
}

func dkimCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dkim <command>",
		Short: "Shows the DKIM records to publish and rotates the signing keys",
		Long: `
The DKIM keys of the dkim_sign check live in Caddy storage; these commands
reach them through the admin API of a running Caddy.

"caddy smtp dkim records [domain]" prints the TXT records to publish: the
current keys, the next ones after a rotation (publish them: they sign once
they are seen in DNS) and the retired ones (keep them until the date
shown). With --cname-zone <zone> it prints, for setups where a provider
hosts the keys, the CNAME records that point the selectors into that zone,
and the TXT records under it.

"caddy smtp dkim rotate <domain>" starts a rotation.

The admin address comes from --address, else from the config named by
--config, else Caddy's default. --json prints the API's JSON response.
`,
	}
	adminFlags(cmd)
	records := &cobra.Command{
		Use:   "records [domain]",
		Short: "Prints the DNS records of the DKIM keys",
		Args:  cobra.MaximumNArgs(1),
		RunE:  runE(cmdDKIMRecords),
	}
	records.Flags().String("cname-zone", "", "Print CNAME records pointing the selectors into this zone, and the TXT records there")
	cmd.AddCommand(records, &cobra.Command{
		Use:   "rotate <domain>",
		Short: "Starts a rotation: new keys that sign once their records are seen in DNS",
		Args:  cobra.ExactArgs(1),
		RunE:  runE(cmdDKIMRotate),
	})
	return cmd
}

func cmdDKIMRecords(fl caddycmd.Flags) (int, error) {
	uri := "/smtp/dkim/records"
	if d := fl.Arg(0); d != "" {
		uri += "?domain=" + url.QueryEscape(d)
	}
	zone := strings.TrimSuffix(fl.String("cname-zone"), ".")
	return call(fl, http.MethodGet, uri, func(recs []dkimsign.Record) { printDKIMRecords(os.Stdout, recs, zone) })
}

// printDKIMRecords prints zone-file lines, one per record, with the
// state as a comment.
func printDKIMRecords(w io.Writer, recs []dkimsign.Record, cnameZone string) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "no DKIM keys (the dkim_sign check makes them when it starts)")
		return
	}
	for _, r := range recs {
		note := "; " + r.State
		if !r.RetireAt.IsZero() {
			note += " until " + r.RetireAt.Format("2006-01-02")
		}
		if cnameZone != "" {
			target := r.Selector + "." + r.Domain + "._domainkey." + cnameZone + "."
			fmt.Fprintf(w, "%s. CNAME %s %s\n", r.Name, target, note)
			fmt.Fprintf(w, "%s TXT %s %s\n", target, quoteTXT(r.TXT), note)
			continue
		}
		fmt.Fprintf(w, "%s. TXT %s %s\n", r.Name, quoteTXT(r.TXT), note)
	}
}

// quoteTXT writes a record's text as quoted strings of at most 255 bytes.
func quoteTXT(s string) string {
	var parts []string
	for len(s) > 255 {
		parts, s = append(parts, `"`+s[:255]+`"`), s[255:]
	}
	return strings.Join(append(parts, `"`+s+`"`), " ")
}

func cmdDKIMRotate(fl caddycmd.Flags) (int, error) {
	domain := fl.Arg(0)
	return call(fl, http.MethodPost, "/smtp/dkim/"+url.PathEscape(domain)+"/rotate", func(s dkimsign.State) {
		if s.Next != nil {
			fmt.Printf("rotation of %s started: publish the records of %s* (caddy smtp dkim records %s); they sign once they are seen in DNS\n", domain, s.Next.Base, domain)
		}
	})
}
