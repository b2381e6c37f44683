package cmdsmtp

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

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
	sub("list", "Lists the queued messages", cobra.NoArgs, cmdList)
	show := sub("show <id>", "Shows a message's envelope, state and header", cobra.ExactArgs(1), cmdShow)
	show.Flags().Bool("body", false, "Show the message body too")
	sub("flush [<id>]", "Makes a message (or every message) due for delivery now", cobra.MaximumNArgs(1), cmdFlush)
	del := sub("delete <id>", "Deletes a message", cobra.ExactArgs(1), cmdDelete)
	del.Flags().Bool("bounce", false, "Send the sender a DSN for the recipients not delivered yet")
	sub("hold <id>", "Stops delivering a message until it is released", cobra.ExactArgs(1), messageAction("hold"))
	sub("release <id>", "Resumes delivering a held message, now", cobra.ExactArgs(1), messageAction("release"))
	sub("hold-domain <domain>", "Stops delivering to a recipient domain", cobra.ExactArgs(1), domainAction("hold"))
	sub("release-domain <domain>", "Resumes delivering to a recipient domain, now", cobra.ExactArgs(1), domainAction("release"))
	sub("domains", "Lists the held domains", cobra.NoArgs, cmdDomains)
	return cmd
}

func messagePath(id string) string { return "/smtp/queue/" + url.PathEscape(id) }

func cmdList(fl caddycmd.Flags) (int, error) {
	return call(fl, http.MethodGet, "/smtp/queue", func(msgs []queue.Snapshot) {
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
	fmt.Fprintln(tw, "ID\tSTATE\tAGE\tTRIES\tNEXT\tSIZE\tFROM\tTO\tLAST ERROR")
	for _, m := range msgs {
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

func cmdFlush(fl caddycmd.Flags) (int, error) {
	uri := "/smtp/queue/flush"
	if fl.NArg() == 1 {
		uri = messagePath(fl.Arg(0)) + "/flush"
	}
	return call(fl, http.MethodPost, uri, func(r smtpadmin.ActionResult) {
		n := 0
		if r.Flushed != nil {
			n = *r.Flushed
		}
		switch {
		case r.ID != "" && n == 0:
			fmt.Printf("%s is being delivered already\n", r.ID)
		case r.ID != "":
			fmt.Printf("%s is due now\n", r.ID)
		default:
			fmt.Printf("%d message(s) due now\n", n)
		}
	})
}

func cmdDelete(fl caddycmd.Flags) (int, error) {
	uri := messagePath(fl.Arg(0))
	if fl.Bool("bounce") {
		uri += "?bounce=1"
	}
	return call(fl, http.MethodDelete, uri, func(r smtpadmin.ActionResult) {
		fmt.Printf("deleted %s\n", r.ID)
		if fl.Bool("bounce") && r.Bounced != nil {
			fmt.Printf("DSN to the sender queued for %d recipient(s)\n", *r.Bounced)
		}
	})
}

func messageAction(action string) caddycmd.CommandFunc {
	done := map[string]string{"hold": "held", "release": "released"}[action]
	return func(fl caddycmd.Flags) (int, error) {
		return call(fl, http.MethodPost, messagePath(fl.Arg(0))+"/"+action, func(r smtpadmin.ActionResult) {
			fmt.Printf("%s %s\n", r.ID, done)
		})
	}
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
