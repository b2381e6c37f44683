package cmdsmtp

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/lists"
)

func init() {
	subcommands = append(subcommands, listsCommand)
}

func listsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lists <command>",
		Short: "Shows and changes the allow and block lists of the lists check",
		Long: `
Shows and changes the allow and block lists used by the "lists" check,
through the admin API of a running Caddy. The lists live in Caddy storage,
so every node sharing the storage sees a change (at its next
reload_interval; the node asked re-reads them at once).

Kinds of entries:
  ip             client address or CIDR network (192.0.2.7, 2001:db8::/32)
  helo           EHLO/HELO name (mail.example.com, .example.com, [192.0.2.7])
  sender         envelope sender address, <> for the null sender
  sender_domain  sender domain (example.com; .example.com for its subdomains)
  recipient      recipient address, or domain as for sender_domain

The admin address comes from --address, else from the config named by
--config, else Caddy's default. --json prints the API's JSON response.
`,
	}
	adminFlags(cmd)
	add := &cobra.Command{
		Use:   "add <allow|block> <kind> <value>",
		Short: "Adds an entry to a list (an existing entry gets the new comment)",
		Args:  listArgs(3),
		RunE:  runE(cmdListsAdd),
	}
	add.Flags().String("comment", "", "Why the entry is there, for the administrators")
	cmd.AddCommand(add,
		&cobra.Command{
			Use:   "remove <allow|block> <kind> <value>",
			Short: "Removes an entry from a list",
			Args:  listArgs(3),
			RunE:  runE(cmdListsRemove),
		},
		&cobra.Command{
			Use:   "show [allow|block]",
			Short: "Shows both lists, or one",
			Args:  listArgs(0, 1),
			RunE:  runE(cmdListsShow),
		})
	return cmd
}

// listArgs accepts one of the counts of arguments, the first naming a
// list.
func listArgs(counts ...int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if !slices.Contains(counts, len(args)) {
			return fmt.Errorf("want the arguments %s", strings.TrimPrefix(cmd.Use, cmd.Name()+" "))
		}
		if len(args) > 0 && !slices.Contains(lists.Names, args[0]) {
			return fmt.Errorf("list %q: want allow or block", args[0])
		}
		return nil
	}
}

func listPath(list string) string { return "/smtp/lists/" + list }

func cmdListsAdd(fl caddycmd.Flags) (int, error) {
	e := lists.Entry{Kind: fl.Arg(1), Value: fl.Arg(2), Comment: fl.String("comment")}
	return callWith(fl, http.MethodPost, listPath(fl.Arg(0)), e, func(e lists.Entry) {
		fmt.Printf("%s %s is in the %s list\n", e.Kind, e.Value, fl.Arg(0))
	})
}

func cmdListsRemove(fl caddycmd.Flags) (int, error) {
	uri := listPath(fl.Arg(0)) + "?" + url.Values{"kind": {fl.Arg(1)}, "value": {fl.Arg(2)}}.Encode()
	return call(fl, http.MethodDelete, uri, func(e lists.Entry) {
		fmt.Printf("%s %s removed from the %s list\n", e.Kind, e.Value, fl.Arg(0))
	})
}

func cmdListsShow(fl caddycmd.Flags) (int, error) {
	if fl.NArg() == 1 {
		list := fl.Arg(0)
		return call(fl, http.MethodGet, listPath(list), func(entries []lists.Entry) {
			writeEntries(os.Stdout, map[string][]lists.Entry{list: entries})
		})
	}
	return call(fl, http.MethodGet, "/smtp/lists", func(l lists.Lists) {
		writeEntries(os.Stdout, map[string][]lists.Entry{lists.Allow: l.Allow, lists.Block: l.Block})
	})
}

// writeEntries prints lists as one table, allow list first.
func writeEntries(w io.Writer, byList map[string][]lists.Entry) {
	n := 0
	for _, entries := range byList {
		n += len(entries)
	}
	if n == 0 && len(byList) == 1 {
		fmt.Fprintln(w, "The list is empty.")
		return
	}
	if n == 0 {
		fmt.Fprintln(w, "The lists are empty.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LIST\tKIND\tVALUE\tADDED\tCOMMENT")
	for _, list := range lists.Names {
		for _, e := range byList[list] {
			added := "-"
			if !e.Added.IsZero() {
				added = e.Added.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", list, e.Kind, e.Value, added, e.Comment)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "%d entry(ies)\n", n)
}
