// Package cmdsmtp adds the `caddy smtp` command to Caddy's CLI: queue
// administration through the admin API of a running instance (`caddy smtp
// queue ...`, like `caddy reload` talks to it), a test submission client
// (`caddy smtp send`) and a TLS checker for a mail domain (`caddy smtp
// check-tls`). See docs/admin-api.md.
//
// Each subcommand lives in its own file and adds its constructor to
// subcommands in an init function.
package cmdsmtp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// subcommands build the subcommands of `caddy smtp`. RegisterCommand runs
// its CobraFunc when the CLI is built, after every init.
var subcommands []func() *cobra.Command

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "smtp",
		Usage: "<command> [args]",
		Short: "Administers the smtp app: the mail queue, quarantine, held domains, test messages, TLS checks",
		Long: `
Commands for the caddy-smtp gateway.

"caddy smtp queue ..." lists and changes the mail queue of a running Caddy
through its admin API, the way "caddy reload" does: the admin address comes
from --address, else from the config named by --config (and --adapter), else
Caddy's default (localhost:2019).

"caddy smtp quarantine ..." lists, shows, releases and deletes the messages
that a check quarantined, and allow-lists their senders.

"caddy smtp lists ..." shows and changes the allow and block lists of the
lists check, through the same admin API.

"caddy smtp dkim ..." prints the DKIM records to publish and rotates the
signing keys of the dkim_sign check, through the same admin API.

"caddy smtp dns-records <domain>" prints the DNS records (MX, SPF, MTA-STS,
TLS-RPT, TLSA, DKIM) that a mail domain should publish for the running config.

"caddy smtp send ..." submits a test message to an SMTP server.

"caddy smtp check-tls <domain>" shows the MX hosts of a domain, its MTA-STS
policy, TLSA records and TLS-RPT record, and tries STARTTLS on each MX under
the policy that delivery would apply, like Postfix's posttls-finger.
`,
		CobraFunc: func(cmd *cobra.Command) {
			for _, sub := range subcommands {
				cmd.AddCommand(sub())
			}
		},
	})
}

// adminFlags adds the flags that find the admin endpoint.
func adminFlags(cmd *cobra.Command) {
	cmd.PersistentFlags().String("address", "", "The address of the admin API endpoint, if not the default")
	cmd.PersistentFlags().StringP("config", "c", "", "Configuration file to read the admin address from, if --address is not used")
	cmd.PersistentFlags().StringP("adapter", "a", "", "Name of the config adapter (when --config is used)")
	cmd.PersistentFlags().Bool("json", false, "Print the API's JSON response instead of a table")
}

// subAdder returns a function that adds to cmd a subcommand that runs run.
func subAdder(cmd *cobra.Command) func(use, short string, args cobra.PositionalArgs, run caddycmd.CommandFunc) *cobra.Command {
	return func(use, short string, args cobra.PositionalArgs, run caddycmd.CommandFunc) *cobra.Command {
		c := &cobra.Command{Use: use, Short: short, Args: args, RunE: runE(run)}
		cmd.AddCommand(c)
		return c
	}
}

// runE adapts a command function to cobra. Unlike
// caddycmd.WrapCommandFuncForCobra it prints an error as one line for
// humans, "caddy smtp queue: <message>", not as a JSON log entry.
func runE(run caddycmd.CommandFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		status, err := run(caddycmd.Flags{FlagSet: cmd.Flags()})
		if err == nil && status != 0 {
			err = fmt.Errorf("exit status %d", status)
		}
		if err != nil {
			prefix := cmd.CommandPath()
			if cmd.HasParent() {
				prefix = cmd.Parent().CommandPath()
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", prefix, err)
			cmd.SilenceErrors, cmd.SilenceUsage = true, true
		}
		return err
	}
}

// apiErrorPrefix starts the errors of caddycmd.AdminAPIRequest for an
// error status; the response body follows.
var apiErrorPrefix = regexp.MustCompile(`^caddy responded with error: HTTP (\d{3}): `)

// apiError turns an error of caddycmd.AdminAPIRequest into one for
// humans: the message of an API error response with its status, or a hint
// when nothing listens at the admin address.
func apiError(err error, addr string) error {
	msg := err.Error()
	if m := apiErrorPrefix.FindStringSubmatch(msg); m != nil {
		var body struct {
			Error string `json:"error"`
		}
		text := strings.TrimSpace(msg[len(m[0]):])
		if json.Unmarshal([]byte(text), &body) == nil && body.Error != "" {
			text = body.Error
		}
		return fmt.Errorf("%s (HTTP %s)", text, m[1])
	}
	// AdminAPIRequest formats the dial error with %v: match its text.
	if strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such file or directory") {
		return fmt.Errorf("%s; is Caddy running? its admin endpoint is %s; use --address", msg, addr)
	}
	return err
}

// adminRequest calls the admin API of the running instance, with reqBody
// (if not nil) as JSON, and returns the response body. API errors come back
// as errors carrying the status and message.
func adminRequest(fl caddycmd.Flags, method, uri string, reqBody any) ([]byte, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return nil, fmt.Errorf("couldn't determine admin API address: %v", err)
	}
	var headers http.Header
	var r io.Reader
	if reqBody != nil {
		raw, err := json.Marshal(reqBody)
		if err != nil {
			return nil, err
		}
		headers, r = http.Header{"Content-Type": {"application/json"}}, bytes.NewReader(raw)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, headers, r)
	if err != nil {
		return nil, apiError(err, addr)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading response: %v", err)
	}
	return body, nil
}

// call runs one admin request and prints the response: raw with --json,
// otherwise decoded into out and shown by human.
func call[T any](fl caddycmd.Flags, method, uri string, human func(T)) (int, error) {
	return callWith(fl, method, uri, nil, human)
}

// callWith is call with a JSON request body.
func callWith[T any](fl caddycmd.Flags, method, uri string, reqBody any, human func(T)) (int, error) {
	body, err := adminRequest(fl, method, uri, reqBody)
	if err != nil {
		return 1, err
	}
	if fl.Bool("json") {
		if !bytes.HasSuffix(body, []byte("\n")) {
			body = append(body, '\n')
		}
		_, err := os.Stdout.Write(body)
		return 0, err
	}
	var out T
	if err := json.Unmarshal(body, &out); err != nil {
		return 1, fmt.Errorf("decoding response of %s %s: %v", method, uri, err)
	}
	human(out)
	return 0, nil
}
