package cmdsmtp

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

func init() {
	subcommands = append(subcommands, tlsaCommand)
}

func tlsaCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tlsa [--name <host>] <address>",
		Short: "Prints the TLSA records (DANE) for the certificate a server presents",
		Long: `
Connects to an SMTP server (our own, typically: localhost:25), says EHLO and
STARTTLS (or, with --implicit, TLS from the first byte as on port 465), and
prints the TLSA records to publish for DANE (RFC 7672) under
_<port>._tcp.<name>:

  3 1 1  the SHA-256 of the server certificate's public key. It stays valid
         across renewals only while the key does: set reuse_private_keys in
         the tls app's automation policy for the name.
  2 1 1  the SHA-256 of the public key of the CA that issued it (the
         intermediate), valid for every certificate that CA signs.

Publish both, or the 2 1 1 records of every intermediate your CA may sign
with. --name is the MX host name the record is for (default: the name in the
address).
`,
		Args: cobra.ExactArgs(1),
		RunE: caddycmd.WrapCommandFuncForCobra(cmdTLSA),
	}
	cmd.Flags().String("name", "", "The host name the records are for (default: the address's host)")
	cmd.Flags().Bool("implicit", false, "TLS from the first byte (port 465) instead of STARTTLS")
	cmd.Flags().Duration("timeout", 30*time.Second, "Timeout for connecting, each reply and the handshake")
	return cmd
}

func cmdTLSA(fl caddycmd.Flags) (int, error) {
	addr := fl.Arg(0)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, "25"
		addr = net.JoinHostPort(host, port)
	}
	name := strings.TrimSuffix(fl.String("name"), ".")
	if name == "" {
		name = host
	}
	level := tlsupgrade.LevelRequired
	ctx, cancel := context.WithTimeout(context.Background(), 2*fl.Duration("timeout"))
	defer cancel()
	helo, _ := os.Hostname()
	if helo == "" {
		helo = "localhost"
	}
	conn, err := tlsupgrade.Dial(ctx, addr, tlsupgrade.Options{
		LocalName: helo, ServerName: name, Policy: tlsupgrade.Policy{Level: level},
		ImplicitTLS: fl.Bool("implicit"), ConnectTimeout: fl.Duration("timeout"),
		CommandTimeout: fl.Duration("timeout"), HandshakeTimeout: fl.Duration("timeout"),
		NoSessionResumption: true, // the records are made from the chain the server sends
	})
	if err != nil {
		return 1, fmt.Errorf("connecting to %s: %v", addr, err)
	}
	defer conn.Close()
	cs, ok := conn.TLSConnectionState()
	if !ok || len(cs.PeerCertificates) == 0 {
		return 1, errors.New("no certificate")
	}
	printTLSA(os.Stdout, "_"+port+"._tcp."+name+".", cs.PeerCertificates)
	_ = conn.Client.Quit()
	return 0, nil
}

// printTLSA writes the 3 1 1 record of the leaf and the 2 1 1 record of
// its issuer, when the server sent it.
func printTLSA(w io.Writer, owner string, chain []*x509.Certificate) {
	spki := func(c *x509.Certificate) string {
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		return hex.EncodeToString(sum[:])
	}
	leaf := chain[0]
	fmt.Fprintf(w, "%s IN TLSA 3 1 1 %s ; %s, expires %s\n", owner, spki(leaf), leaf.Subject.CommonName, leaf.NotAfter.UTC().Format("2006-01-02"))
	if len(chain) > 1 {
		fmt.Fprintf(w, "%s IN TLSA 2 1 1 %s ; issuer %s\n", owner, spki(chain[1]), chain[1].Subject.CommonName)
	}
}
