package cmdsmtp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/spf13/cobra"

	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

func init() {
	subcommands = append(subcommands, sendCommand)
}

func sendCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "send --server <host:port> --from <addr> --to <addr> [--starttls | --tls] [--auth <user:password>] [--subject <text>] [--body <text>]",
		Short: "Submits a test message to an SMTP server",
		Long: `
Submits one test message to an SMTP server and prints the server's reply.

--starttls upgrades the connection with STARTTLS and fails when that is not
possible; --tls speaks TLS from the first byte (implicit TLS, port 465).
Without either the session stays in plaintext. The server certificate must
verify against the system roots (or --ca) unless --insecure is given.
--auth needs TLS: the password would otherwise cross the network in clear.
`,
		Args: cobra.NoArgs,
		RunE: caddycmd.WrapCommandFuncForCobra(cmdSend),
	}
	f := cmd.Flags()
	f.String("server", "", "Address of the SMTP server (host:port)")
	f.Bool("starttls", false, "Upgrade the session with STARTTLS (required to succeed)")
	f.Bool("tls", false, "Use implicit TLS (TLS from the first byte, as on port 465)")
	f.String("auth", "", "Authenticate with AUTH PLAIN (or LOGIN) as user:password")
	f.String("from", "", "Envelope sender and From address")
	f.StringArray("to", nil, "Recipient address (repeat for more)")
	f.String("subject", "caddy-smtp test message", "Subject of the message")
	f.String("body", "This is a test message sent by `caddy smtp send`.", "Text of the message")
	f.String("helo", "", "Name to send in EHLO (default: this host's name)")
	f.String("ca", "", "PEM file of CA certificates to trust besides the system roots")
	f.Bool("insecure", false, "Do not verify the server certificate")
	f.String("servername", "", "Name the server's certificate is checked against, and sent as SNI (default: the host of --server)")
	f.Duration("timeout", 30*time.Second, "Timeout for connecting and for each command")
	return cmd
}

// sendOptions are the flags of `caddy smtp send`, checked.
type sendOptions struct {
	server, host       string
	implicit, starttls bool
	user, password     string
	from               string
	to                 []string
	subject, body      string
	helo               string
	roots              *x509.CertPool
	insecure           bool
	timeout            time.Duration
}

func parseSendFlags(fl caddycmd.Flags) (*sendOptions, error) {
	o := &sendOptions{
		server: fl.String("server"), implicit: fl.Bool("tls"), starttls: fl.Bool("starttls"),
		from: fl.String("from"), subject: fl.String("subject"), body: fl.String("body"),
		helo: fl.String("helo"), insecure: fl.Bool("insecure"), timeout: fl.Duration("timeout"),
	}
	var err error
	if o.to, err = fl.GetStringArray("to"); err != nil {
		return nil, err
	}
	if o.server == "" || o.from == "" || len(o.to) == 0 {
		return nil, errors.New("--server, --from and --to are required")
	}
	if o.host, _, err = net.SplitHostPort(o.server); err != nil {
		return nil, fmt.Errorf("--server %q: want host:port: %v", o.server, err)
	}
	if name := strings.TrimSuffix(fl.String("servername"), "."); name != "" {
		o.host = name // e.g. --server 127.0.0.1:587 --servername mail.example.com
	}
	if o.implicit && o.starttls {
		return nil, errors.New("--tls and --starttls exclude each other")
	}
	if auth := fl.String("auth"); auth != "" {
		var ok bool
		if o.user, o.password, ok = strings.Cut(auth, ":"); !ok || o.user == "" {
			return nil, errors.New("--auth: want user:password")
		}
		if !o.implicit && !o.starttls {
			return nil, errors.New("--auth needs --starttls or --tls: the password must not cross the network in clear")
		}
	}
	if o.helo == "" {
		if o.helo, err = os.Hostname(); err != nil || o.helo == "" {
			o.helo = "localhost"
		}
	}
	if o.timeout <= 0 {
		return nil, errors.New("--timeout must be positive")
	}
	if o.roots, err = tlsupgrade.LoadRoots(fl.String("ca")); err != nil {
		return nil, fmt.Errorf("--ca: %v", err)
	}
	return o, nil
}

func cmdSend(fl caddycmd.Flags) (int, error) {
	o, err := parseSendFlags(fl)
	if err != nil {
		return 1, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, closeConn, err := o.connect(ctx)
	if err != nil {
		return 1, err
	}
	defer closeConn()
	if o.user != "" {
		if err := o.authenticate(c); err != nil {
			return 1, err
		}
		fmt.Printf("authenticated as %s\n", o.user)
	}
	reply, err := o.transaction(c)
	if err != nil {
		return 1, err
	}
	fmt.Printf("accepted: %s\n", reply)
	return 0, nil
}

// connect opens the session: implicit TLS, STARTTLS (required) or
// plaintext, and reports what TLS it got. The returned function ends the
// session with QUIT.
func (o *sendOptions) connect(ctx context.Context) (*smtp.Client, func(), error) {
	if o.implicit {
		d := &net.Dialer{Timeout: o.timeout}
		conn, err := tls.DialWithDialer(d, "tcp", o.server, &tls.Config{
			ServerName: o.host, RootCAs: o.roots, InsecureSkipVerify: o.insecure, MinVersion: tls.VersionTLS12,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("connecting to %s with TLS: %v", o.server, err)
		}
		c := smtp.NewClient(conn)
		c.CommandTimeout = o.timeout
		if err := c.Hello(o.helo); err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("%s: %v", o.server, err)
		}
		cs := conn.ConnectionState()
		verified := "certificate verified"
		if o.insecure {
			verified = "certificate not checked (--insecure)"
		}
		fmt.Printf("connected to %s with implicit TLS (%s, %s, %s)\n", o.server,
			tlsupgrade.VersionName(cs.Version), tlsupgrade.CipherName(cs.CipherSuite), verified)
		return c, func() { quit(c) }, nil
	}
	level := tlsupgrade.LevelNone
	if o.starttls {
		level = tlsupgrade.LevelRequired
	}
	conn, err := tlsupgrade.Dial(ctx, o.server, tlsupgrade.Options{
		LocalName:      o.helo,
		ServerName:     o.host,
		Policy:         tlsupgrade.Policy{Level: level},
		RootCAs:        o.roots,
		ConnectTimeout: o.timeout,
		CommandTimeout: o.timeout,
	})
	if err != nil {
		return nil, nil, err
	}
	res := conn.Result
	if !o.starttls {
		fmt.Printf("connected to %s in plaintext\n", o.server)
		return conn.Client, func() { conn.Close() }, nil
	}
	if !res.Verified && !o.insecure {
		conn.Close()
		return nil, nil, fmt.Errorf("%s: server certificate not trusted: %s (use --ca <file> or --insecure)", o.server, res.VerifyError)
	}
	verified := "certificate verified"
	if !res.Verified {
		verified = "certificate not verified: " + res.VerifyError
	}
	fmt.Printf("connected to %s with STARTTLS (%s, %s, %s)\n", o.server, res.Version, res.Cipher, verified)
	return conn.Client, func() { conn.Close() }, nil
}

func quit(c *smtp.Client) {
	if c.Quit() != nil {
		c.Close()
	}
}

func (o *sendOptions) authenticate(c *smtp.Client) error {
	var a sasl.Client
	switch {
	case c.SupportsAuth(sasl.Plain):
		a = sasl.NewPlainClient("", o.user, o.password)
	case c.SupportsAuth(sasl.Login):
		a = sasl.NewLoginClient(o.user, o.password)
	default:
		return fmt.Errorf("%s offers neither AUTH PLAIN nor AUTH LOGIN", o.server)
	}
	if err := c.Auth(a); err != nil {
		return fmt.Errorf("authentication failed: %v", err)
	}
	return nil
}

// transaction sends the message and returns the server's final reply.
func (o *sendOptions) transaction(c *smtp.Client) (string, error) {
	var opts *smtp.MailOptions
	if !isASCII(o.from + strings.Join(o.to, "")) {
		opts = &smtp.MailOptions{UTF8: true}
	}
	if err := c.Mail(o.from, opts); err != nil {
		return "", fmt.Errorf("MAIL FROM:<%s>: %v", o.from, err)
	}
	for _, to := range o.to {
		if err := c.Rcpt(to, nil); err != nil {
			return "", fmt.Errorf("RCPT TO:<%s>: %v", to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", fmt.Errorf("DATA: %v", err)
	}
	if _, err := w.Write(o.message(time.Now())); err != nil {
		return "", fmt.Errorf("sending the message: %v", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", fmt.Errorf("end of DATA: %v", err)
	}
	return resp.StatusText, nil
}

// message builds the test message with CRLF line ends.
func (o *sendOptions) message(now time.Time) []byte {
	var id [12]byte
	rand.Read(id[:])
	subject := o.subject
	if !isASCII(subject) {
		subject = mime.QEncoding.Encode("utf-8", subject)
	}
	body := strings.ReplaceAll(strings.ReplaceAll(o.body, "\r\n", "\n"), "\r", "\n")
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	cte := "7bit"
	if !isASCII(body) {
		cte = "8bit"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\n", o.from)
	fmt.Fprintf(&b, "To: <%s>\n", strings.Join(o.to, ">, <"))
	fmt.Fprintf(&b, "Subject: %s\n", subject)
	fmt.Fprintf(&b, "Date: %s\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\n", hex.EncodeToString(id[:]), o.helo)
	b.WriteString("MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n")
	fmt.Fprintf(&b, "Content-Transfer-Encoding: %s\n\n", cte)
	b.WriteString(body)
	return []byte(strings.ReplaceAll(b.String(), "\n", "\r\n"))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
