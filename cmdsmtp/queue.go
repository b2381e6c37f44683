package cmdsmtp

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpadmin"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func init() {
	subcommands = append(subcommands, queueCommand)
}

func queueCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue <command>",
		Short: "Lists and changes the mail queue of the running instance",
		Long: `
Lists and changes the mail queue of a running Caddy through its admin API.
The admin address comes from --address, else from the config named by
--config, else Caddy's default. --json prints the API's JSON response.
`,
	}
	adminFlags(cmd)
	sub := subAdder(cmd)
	list := sub("list", "Lists the queued messages (all, or those the filters select)", cobra.NoArgs, cmdList)
	filterFlags(list)
	list.Flags().Bool("fleet", false, "Every node's messages, from the queue store a fleet shares (the postgres store)")
	show := sub("show <id>", "Shows a message's envelope, state and header", cobra.ExactArgs(1), cmdShow)
	show.Flags().Bool("body", false, "Show the message body too")
	summary := sub("summary", "Counts the messages per recipient domain and age, like Postfix's qshape", cobra.NoArgs, cmdSummary)
	filterFlags(summary)
	summary.Flags().Bool("recipients", false, "Count pending recipients instead of messages")
	for _, a := range []struct{ use, short string }{
		{"flush", "Makes messages due for delivery now (no arguments: every message)"},
		{"delete", "Deletes messages"},
		{"hold", "Stops delivering messages until they are released"},
		{"release", "Resumes delivering held messages, now"},
		{"requeue", "Routes messages again and gives them a fresh attempt now, restarting their retry backoff (not their age)"},
	} {
		c := sub(a.use+" <id>... | --all [filters]", a.short, cobra.ArbitraryArgs, queueAction(a.use))
		filterFlags(c)
		c.Flags().Bool("all", false, "Act on every message that the filters select (quarantined ones only with --quarantined)")
		if a.use == "delete" {
			c.Flags().Bool("bounce", false, "Send the sender a DSN for the recipients not delivered yet")
		}
	}
	sub("hold-domain <domain>", "Stops delivering to a recipient domain", cobra.ExactArgs(1), domainAction("hold"))
	sub("release-domain <domain>", "Resumes delivering to a recipient domain, now", cobra.ExactArgs(1), domainAction("release"))
	sub("domains", "Lists the held domains", cobra.NoArgs, cmdDomains)
	return cmd
}

// filterFlags adds the flags that select messages (smtpadmin.Selection).
func filterFlags(c *cobra.Command) {
	c.Flags().String("from", "", "Only messages from this sender (an address, @domain, or <> for the null sender)")
	c.Flags().String("to", "", "Only messages with this pending recipient (an address or @domain)")
	c.Flags().String("domain", "", "Only messages with a pending recipient in this domain")
	c.Flags().String("older-than", "", "Only messages queued for longer than this (90m, 2d)")
	c.Flags().Bool("held", false, "Only messages held by an administrator")
	c.Flags().Bool("quarantined", false, "Only quarantined messages (left out otherwise)")
}

// selection reads the filter flags; filtered reports whether any is set.
func selection(fl caddycmd.Flags) (sel smtpadmin.Selection, filtered bool, err error) {
	sel.From, sel.To, sel.Domain = fl.String("from"), fl.String("to"), fl.String("domain")
	sel.Held, sel.Quarantined = fl.Bool("held"), fl.Bool("quarantined")
	if s := fl.String("older-than"); s != "" {
		d, err := caddy.ParseDuration(s)
		if err != nil || d < 0 {
			return sel, false, fmt.Errorf("--older-than: %q is not a duration", s)
		}
		sel.OlderThan = caddy.Duration(d)
	}
	filtered = sel.From != "" || sel.To != "" || sel.Domain != "" || sel.OlderThan != 0 || sel.Held || sel.Quarantined
	return sel, filtered, nil
}

// filterQuery returns the filter flags as the query of a GET.
func filterQuery(fl caddycmd.Flags) (string, error) {
	sel, filtered, err := selection(fl)
	if err != nil || !filtered {
		return "", err
	}
	v := url.Values{}
	for name, val := range map[string]string{"from": sel.From, "to": sel.To, "domain": sel.Domain, "older_than": fl.String("older-than")} {
		if val != "" {
			v.Set(name, val)
		}
	}
	for name, on := range map[string]bool{"held": sel.Held, "quarantined": sel.Quarantined} {
		if on {
			v.Set(name, "1")
		}
	}
	return "?" + v.Encode(), nil
}

func messagePath(id string) string { return "/smtp/queue/" + url.PathEscape(id) }

func cmdList(fl caddycmd.Flags) (int, error) {
	query, err := filterQuery(fl)
	if err != nil {
		return 1, err
	}
	if fl.Bool("fleet") {
		if query == "" {
			query = "?fleet=1"
		} else {
			query += "&fleet=1"
		}
	}
	return call(fl, http.MethodGet, "/smtp/queue"+query, func(msgs []queue.Snapshot) {
		writeList(os.Stdout, msgs, time.Now())
	})
}

// writeList prints the queue as a table, one message a line.
func writeList(w io.Writer, msgs []queue.Snapshot, now time.Time) {
	if len(msgs) == 0 {
		fmt.Fprintln(w, "The queue is empty.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fleet := slices.ContainsFunc(msgs, func(m queue.Snapshot) bool { return m.Node != "" })
	if fleet {
		fmt.Fprint(tw, "NODE\t")
	}
	fmt.Fprintln(tw, "ID\tSTATE\tAGE\tTRIES\tNEXT\tSIZE\tFROM\tTO\tLAST ERROR")
	for _, m := range msgs {
		if fleet {
			fmt.Fprintf(tw, "%s\t", m.Node)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.State,
			shortDuration(time.Duration(m.AgeSeconds)*time.Second), m.Attempts, nextAttempt(m, now),
			humanize.IBytes(uint64(m.Size)), sender(m.From), recipients(m), oneLine(m.LastError))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d message(s)\n", len(msgs))
}

// recipients summarises the pending recipients of a message:
// "a@example.com (+2)" and, when some are done, "1/3 pending".
func recipients(m queue.Snapshot) string {
	var pending []string
	for _, r := range m.Recipients {
		if r.Status == "pending" {
			pending = append(pending, r.Addr)
		}
	}
	if len(pending) == 0 {
		return "-"
	}
	s := pending[0]
	if len(pending) > 1 {
		s += fmt.Sprintf(" (+%d)", len(pending)-1)
	}
	if len(pending) < len(m.Recipients) {
		s += fmt.Sprintf(" [%d/%d pending]", len(pending), len(m.Recipients))
	}
	return s
}

func nextAttempt(m queue.Snapshot, now time.Time) string {
	if m.NextAttempt.IsZero() {
		return "-"
	}
	d := m.NextAttempt.Sub(now)
	if d <= 0 {
		return "now"
	}
	return "in " + shortDuration(d)
}

func sender(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// shortDuration prints a duration in its two largest units: 45s, 3m20s,
// 2h5m, 3d4h.
func shortDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func cmdShow(fl caddycmd.Flags) (int, error) {
	uri := messagePath(fl.Arg(0))
	if fl.Bool("body") {
		uri += "?body=1"
	}
	return call(fl, http.MethodGet, uri, func(d smtpadmin.MessageDetail) {
		writeDetail(os.Stdout, d, time.Now())
	})
}

// writeDetail prints one message: envelope and state, then the header
// section and the body.
func writeDetail(w io.Writer, d smtpadmin.MessageDetail, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	state := d.State
	if d.Attempts > 0 {
		state += fmt.Sprintf(", %d attempt(s)", d.Attempts)
	}
	if next := nextAttempt(d.Snapshot, now); next != "-" {
		state += ", next " + next
	}
	fmt.Fprintf(tw, "ID:\t%s\n", d.ID)
	fmt.Fprintf(tw, "State:\t%s\n", state)
	fmt.Fprintf(tw, "Arrived:\t%s (%s ago)\n", d.Arrived.Local().Format(time.RFC1123Z), shortDuration(time.Duration(d.AgeSeconds)*time.Second))
	fmt.Fprintf(tw, "Size:\t%s\n", humanize.IBytes(uint64(d.Size)))
	fmt.Fprintf(tw, "From:\t%s\n", sender(d.From))
	client := d.Client.Addr
	if d.Client.Helo != "" {
		client += " (" + d.Client.Helo + ")"
	}
	if d.Client.TLSVersion != "" {
		client += " " + d.Client.TLSVersion
	}
	if d.Client.AuthUser != "" {
		client += " auth " + d.Client.AuthUser
	}
	if client != "" {
		fmt.Fprintf(tw, "Client:\t%s\n", client)
	}
	if d.Server != "" {
		fmt.Fprintf(tw, "Server:\t%s\n", d.Server)
	}
	if d.LastError != "" {
		fmt.Fprintf(tw, "Last error:\t%s\n", oneLine(d.LastError))
	}
	tw.Flush()
	fmt.Fprintln(w, "Recipients:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range d.Recipients {
		status := r.Status
		if r.Held {
			status += " (domain held)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", r.Addr, status, oneLine(r.LastReply))
	}
	tw.Flush()
	fmt.Fprintln(w)
	writeText(w, d.Headers, d.HeadersBase64, "header")
	if d.Body != "" || d.BodyBase64 != "" {
		fmt.Fprintln(w)
		writeText(w, d.Body, d.BodyBase64, "body")
	}
}

// writeText prints message text with local line ends, or says that it is
// not UTF-8 (the JSON output has it in base64).
func writeText(w io.Writer, text, b64, what string) {
	if b64 != "" {
		fmt.Fprintf(w, "(the %s is not UTF-8 text; see --json)\n", what)
		return
	}
	text = strings.ReplaceAll(text, "\r\n", "\n")
	fmt.Fprint(w, text)
	if !strings.HasSuffix(text, "\n") {
		fmt.Fprintln(w)
	}
}

// actionDone is how the output of an action says that it was done.
var actionDone = map[string]string{"flush": "due now", "delete": "deleted", "hold": "held", "release": "released", "requeue": "requeued"}

// queueAction runs an action on the messages given by ID, or with --all
// on those the filters select: one ID through the message's own endpoint,
// more through POST /smtp/queue/<action>. A flush without arguments makes
// every message due, as before --all existed.
func queueAction(action string) caddycmd.CommandFunc {
	return func(fl caddycmd.Flags) (int, error) {
		sel, filtered, err := selection(fl)
		if err != nil {
			return 1, err
		}
		sel.IDs, sel.All, sel.Bounce = fl.Args(), fl.Bool("all"), action == "delete" && fl.Bool("bounce")
		switch {
		case len(sel.IDs) > 0 && sel.All:
			return 1, fmt.Errorf("give message IDs or --all, not both")
		case filtered && !sel.All:
			return 1, fmt.Errorf("the filters select messages with --all only")
		case len(sel.IDs) == 1:
			return messageAction(fl, action, sel.IDs[0], sel.Bounce)
		case len(sel.IDs) == 0 && !sel.All && action == "flush":
			return call(fl, http.MethodPost, "/smtp/queue/flush", func(r smtpadmin.ActionResult) {
				fmt.Printf("%d message(s) due now\n", deref(r.Flushed))
			})
		case len(sel.IDs) == 0 && !sel.All:
			return 1, fmt.Errorf("give the IDs of the messages, or --all (with filters)")
		}
		return bulkAction(fl, action, sel)
	}
}

// bulkAction runs POST /smtp/queue/<action> and prints the counts (or the
// JSON); it fails when the action failed for a message.
func bulkAction(fl caddycmd.Flags, action string, sel smtpadmin.Selection) (int, error) {
	uri := "/smtp/queue/" + action
	body, err := adminRequest(fl, http.MethodPost, uri, sel)
	if err != nil {
		return 1, err
	}
	var r smtpadmin.BulkResult
	if err := json.Unmarshal(body, &r); err != nil {
		return 1, fmt.Errorf("decoding response of POST %s: %v", uri, err)
	}
	if fl.Bool("json") {
		os.Stdout.Write(body)
	} else {
		fmt.Printf("%s %d of %d message(s)", actionDone[action], r.Done, r.Matched)
		if r.Skipped > 0 {
			fmt.Printf(", %d skipped (held)", r.Skipped)
		}
		if sel.Bounce {
			fmt.Printf(", DSNs queued for %d recipient(s)", r.Bounced)
		}
		fmt.Println()
	}
	if len(r.Errors) == 0 {
		return 0, nil
	}
	msgs := make([]string, len(r.Errors))
	for i, e := range r.Errors {
		msgs[i] = e.ID + ": " + e.Error
	}
	return 1, fmt.Errorf("failed for %d message(s):\n  %s", len(r.Errors), strings.Join(msgs, "\n  "))
}

// messageAction runs an action on one message through its endpoint.
func messageAction(fl caddycmd.Flags, action, id string, bounce bool) (int, error) {
	method, uri := http.MethodPost, messagePath(id)+"/"+action
	if action == "delete" {
		method, uri = http.MethodDelete, messagePath(id)
		if bounce {
			uri += "?bounce=1"
		}
	}
	return call(fl, method, uri, func(r smtpadmin.ActionResult) {
		switch {
		case action == "flush" && deref(r.Flushed) == 0:
			fmt.Printf("%s is being delivered already\n", r.ID)
		case action == "delete":
			fmt.Printf("deleted %s\n", r.ID)
			if bounce {
				fmt.Printf("DSN to the sender queued for %d recipient(s)\n", deref(r.Bounced))
			}
		default:
			fmt.Printf("%s %s\n", r.ID, actionDone[action])
		}
	})
}

func deref(n *int) int {
	if n == nil {
		return 0
	}
	return *n
}

func cmdSummary(fl caddycmd.Flags) (int, error) {
	query, err := filterQuery(fl)
	if err != nil {
		return 1, err
	}
	return call(fl, http.MethodGet, "/smtp/queue/summary"+query, func(s queue.Summary) {
		writeSummary(os.Stdout, s, fl.Bool("recipients"))
	})
}

// writeSummary prints a summary as qshape does: a row per domain (the
// total first), a column per age.
func writeSummary(w io.Writer, s queue.Summary, recipients bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "DOMAIN\tTOTAL\t%s\t\n", strings.Join(s.Buckets, "\t"))
	for _, d := range append([]queue.DomainSummary{s.Total}, s.Domains...) {
		total, cols := d.Messages, d.ByAge
		if recipients {
			total, cols = d.Recipients, d.RecipientsByAge
		}
		fmt.Fprintf(tw, "%s\t%d", d.Domain, total)
		for _, n := range cols {
			fmt.Fprintf(tw, "\t%d", n)
		}
		fmt.Fprintln(tw, "\t")
	}
	tw.Flush()
}

func domainAction(action string) caddycmd.CommandFunc {
	return func(fl caddycmd.Flags) (int, error) {
		uri := "/smtp/domains/" + url.PathEscape(fl.Arg(0)) + "/" + action
		return call(fl, http.MethodPost, uri, func(r smtpadmin.ActionResult) {
			if r.Held != nil && *r.Held {
				fmt.Printf("delivery to %s held\n", r.Domain)
			} else {
				fmt.Printf("delivery to %s released\n", r.Domain)
			}
		})
	}
}

func cmdDomains(fl caddycmd.Flags) (int, error) {
	return call(fl, http.MethodGet, "/smtp/domains", func(ds []smtpadmin.HeldDomain) {
		if len(ds) == 0 {
			fmt.Println("No domain is held.")
			return
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tMESSAGES\tRECIPIENTS")
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%d\t%d\n", d.Domain, d.Messages, d.Recipients)
		}
		tw.Flush()
	})
}
