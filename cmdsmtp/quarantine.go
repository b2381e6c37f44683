package cmdsmtp

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpadmin"
)

func init() {
	subcommands = append(subcommands, quarantineCommand)
}

func quarantineCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quarantine <command>",
		Short: "Lists, releases and deletes the quarantined messages",
		Long: `
Lists, shows, releases and deletes the messages that a check quarantined,
through the admin API of a running Caddy. A quarantined message stays in
the queue, held, until it is released (delivered to its original
recipients) or deleted (no DSN), or until the smtp app's
quarantine_retention has passed (then it is deleted).

"allow-sender" adds the message's envelope sender (with --domain, its
domain) to the allow list of the lists check, then releases the message.

The admin address comes from --address, else from the config named by
--config, else Caddy's default. --json prints the API's JSON response.
`,
	}
	adminFlags(cmd)
	sub := subAdder(cmd)
	list := sub("list", "Lists the quarantined messages, newest first", cobra.NoArgs, cmdQuarantineList)
	list.Flags().String("search", "", "Only messages whose sender, a recipient or the subject contains this text")
	list.Flags().Int("offset", 0, "Skip this many messages")
	list.Flags().Int("limit", 0, "Show at most this many messages (default: the API's, 50)")
	show := sub("show <id>", "Shows a quarantined message: why, envelope and header", cobra.ExactArgs(1), cmdQuarantineShow)
	show.Flags().Bool("body", false, "Show the message body too")
	sub("release <id>...", "Delivers quarantined messages to their recipients", cobra.MinimumNArgs(1), quarantineEach(http.MethodPost, "release"))
	sub("delete <id>...", "Deletes quarantined messages (no DSN)", cobra.MinimumNArgs(1), quarantineEach(http.MethodDelete, ""))
	allow := sub("allow-sender <id>", "Allow-lists the sender of a quarantined message and releases it", cobra.ExactArgs(1), cmdQuarantineAllow)
	allow.Flags().Bool("domain", false, "Allow the sender's domain rather than the address")
	return cmd
}

func quarantinePath(id string) string { return "/smtp/quarantine/" + url.PathEscape(id) }

func cmdQuarantineList(fl caddycmd.Flags) (int, error) {
	v := url.Values{}
	if s := fl.String("search"); s != "" {
		v.Set("q", s)
	}
	if n := fl.Int("offset"); n != 0 {
		v.Set("offset", strconv.Itoa(n))
	}
	if n := fl.Int("limit"); n != 0 {
		v.Set("limit", strconv.Itoa(n))
	}
	uri := "/smtp/quarantine"
	if len(v) > 0 {
		uri += "?" + v.Encode()
	}
	return call(fl, http.MethodGet, uri, func(l smtpadmin.QuarantineList) {
		writeQuarantine(os.Stdout, l, time.Now())
	})
}

// writeQuarantine prints a page of the quarantine as a table.
func writeQuarantine(w io.Writer, l smtpadmin.QuarantineList, now time.Time) {
	if l.Total == 0 {
		fmt.Fprintln(w, "The quarantine is empty.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGE\tFROM\tTO\tSUBJECT\tCHECK\tREASON")
	for _, m := range l.Messages {
		to := "-"
		if len(m.Recipients) > 0 {
			to = m.Recipients[0]
		}
		if len(m.Recipients) > 1 {
			to += fmt.Sprintf(" (+%d)", len(m.Recipients)-1)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, shortDuration(now.Sub(m.Quarantined)),
			sender(m.From), to, clip(oneLine(m.Subject), 60), m.Check, clip(oneLine(m.Reason), 60))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d-%d of %d message(s)\n", min(l.Offset+1, l.Total), l.Offset+len(l.Messages), l.Total)
}

// clip shortens text to n runes, marking the cut.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func cmdQuarantineShow(fl caddycmd.Flags) (int, error) {
	uri := quarantinePath(fl.Arg(0))
	if fl.Bool("body") {
		uri += "?body=1"
	}
	return call(fl, http.MethodGet, uri, func(d smtpadmin.QuarantineDetail) {
		writeQuarantined(os.Stdout, d, time.Now())
	})
}

// writeQuarantined prints why a message is quarantined, then the message
// as `caddy smtp queue show` does.
func writeQuarantined(w io.Writer, d smtpadmin.QuarantineDetail, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Subject:\t%s\n", oneLine(d.Subject))
	if q := d.Quarantine; q != nil {
		fmt.Fprintf(tw, "Quarantined:\t%s (%s ago) by %s\n", q.At.Local().Format(time.RFC1123Z), shortDuration(now.Sub(q.At)), q.Check)
		if q.Reason != "" {
			fmt.Fprintf(tw, "Reason:\t%s\n", oneLine(q.Reason))
		}
	}
	for _, c := range d.Checks {
		fmt.Fprintf(tw, "Check %s:\t%s %s\n", c.Check, c.Verdict, oneLine(c.Result))
	}
	tw.Flush()
	writeDetail(w, d.MessageDetail, now)
}

// quarantineEach runs an action on every ID given, printing one line for
// each; it carries on after a failure and fails at the end.
func quarantineEach(method, action string) caddycmd.CommandFunc {
	return func(fl caddycmd.Flags) (int, error) {
		var errs []error
		for _, id := range fl.Args() {
			uri := quarantinePath(id)
			if action != "" {
				uri += "/" + action
			}
			if _, err := call(fl, method, uri, printQuarantineResult); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
			}
		}
		if len(errs) > 0 {
			return 1, errors.Join(errs...)
		}
		return 0, nil
	}
}

func cmdQuarantineAllow(fl caddycmd.Flags) (int, error) {
	uri := quarantinePath(fl.Arg(0)) + "/allow-sender"
	if fl.Bool("domain") {
		uri += "?domain=1"
	}
	return call(fl, http.MethodPost, uri, printQuarantineResult)
}

func printQuarantineResult(r smtpadmin.QuarantineResult) {
	var did []string
	if r.Allowed != nil {
		did = append(did, fmt.Sprintf("%s %s is in the allow list", r.Allowed.Kind, r.Allowed.Value))
	}
	if r.Released {
		did = append(did, "released")
	}
	if r.Deleted {
		did = append(did, "deleted")
	}
	fmt.Printf("%s %s\n", r.ID, strings.Join(did, ", "))
}
