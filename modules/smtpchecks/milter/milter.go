// Package milter is the `smtp.checks.milter` check: a milter (the Sendmail
// mail filter protocol, as Postfix's smtpd_milters speaks it) such as
// OpenDKIM, rspamd's proxy worker, spamass-milter or clamav-milter judges
// the transaction at the stages it asks for, and its header changes are
// applied to the message.
//
// The milter session of a transaction opens at its first RCPT (connect,
// HELO, MAIL FROM, then RCPT for each recipient) and goes on at the end of
// DATA (the header fields, the end of the header, the body in chunks of
// at most 64 KiB, the end of the message). It is closed when the
// transaction ends.
//
// What is supported of the milter's answers:
//
//	answer                    | at RCPT               | at the end of DATA
//	--------------------------|-----------------------|-----------------------------------
//	continue                  | next stage            | accept
//	accept                    | accept, milter done   | accept
//	reject, tempfail, reply   | refuse the recipient  | refuse the message
//	  (at connect/HELO/MAIL: every recipient of the transaction)
//	discard                   | accept, then quarantine the message ("discarded by milter")
//	quarantine                | -                     | quarantine with the milter's reason
//	add/insert header         | -                     | added at the top of the header
//	change/delete header      | -                     | see below
//
// Our core has no discard: a discarded message is held in the quarantine
// instead, where an administrator deletes or releases it. Headers a milter
// inserts at a position go to the top of the header with the other
// fields the checks add. A change (or deletion) of one occurrence of a
// field is approximated: every occurrence of that field is removed, and
// the occurrences that remain (the changed one with its new value) are
// added back at the top. A body replacement (a disclaimer or
// attachment-stripping milter) replaces everything after the header
// section, which stays as received. Changes of the envelope sender or
// recipients are not offered to the milter in the negotiation, so a
// milter that needs them cannot ask for them.
//
// Header fields from the milter keep their folding when it is well formed
// (a DKIM signature made with simple canonicalization holds); others are
// unfolded.
//
// On the server's list, the milter also judges the mail of trusted
// clients (authenticated, relay_networks: a signer such as OpenDKIM needs
// them), as Postfix's smtpd_milters do: for those, the server's recipient
// checks do not run, so the whole envelope goes to the milter at DATA, and
// its refusal of a single recipient is not applied.
//
// Macros sent: j (the host's name), {daemon_name} (the server's name) and
// {client_addr}, {client_name} at connect, {auth_authen} (when
// authenticated) and {mail_addr} at MAIL, {rcpt_addr} at RCPT. The queue
// ID (i) and the TLS macros are not known to checks and not sent.
package milter

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/d--j/go-milter"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(Milter{})
}

// Milter asks one milter about each transaction of its route (or server).
type Milter struct {
	// Address is where the milter listens: `host:port` or `tcp/host:port`
	// for TCP, `unix//path/to/socket` for a Unix socket. Postfix's forms
	// `inet:host:port` and `unix:/path` are taken too. Required.
	Address string `json:"address,omitempty"`

	// Timeout bounds connecting to the milter and each command sent to
	// it (the wait for each reply). Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// DefaultAction is what happens when the milter cannot be reached or
	// fails (times out, breaks the protocol), like Postfix's
	// milter_default_action:
	//
	//	value    | the recipient or message is
	//	---------|------------------------------------------
	//	tempfail | refused with 451 4.7.1 (the client retries)
	//	reject   | refused with 550 5.7.1
	//	accept   | taken as if there were no milter
	//
	// Default: tempfail.
	DefaultAction string `json:"default_action,omitempty"`

	network, addr string
	hostname      string
	options       []milter.Option
	logger        *zap.Logger
}

const defaultTimeout = 10 * time.Second

// The actions we offer the milter: header changes, body replacement and
// quarantine (no envelope changes).
const offeredActions = milter.OptAddHeader | milter.OptChangeHeader | milter.OptChangeBody | milter.OptQuarantine

// The protocol steps the milter may leave out or answer without a reply:
// all that go-milter handles but SMFIP_RCPT_REJ (we never tell a milter
// about recipients that others refused).
const offeredProtocol = milter.OptNoConnect | milter.OptNoHelo | milter.OptNoMailFrom | milter.OptNoRcptTo |
	milter.OptNoBody | milter.OptNoHeaders | milter.OptNoEOH | milter.OptNoUnknown | milter.OptNoData |
	milter.OptSkip | milter.OptNoReplies | milter.OptHeaderLeadingSpace

// chunkSize is the largest body chunk we send (the protocol's 64 KiB
// minimum, which every milter takes).
const chunkSize = int(milter.DataSize64K)

// CaddyModule returns the Caddy module information.
func (Milter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.milter",
		New: func() caddy.Module { return new(Milter) },
	}
}

// Provision checks the config and prepares the client.
func (m *Milter) Provision(ctx caddy.Context) error {
	m.logger = ctx.Logger()
	return m.setup()
}

// setup checks the config and sets the defaults.
func (m *Milter) setup() error {
	var err error
	if m.network, m.addr, err = parseAddress(m.Address); err != nil {
		return fmt.Errorf("milter: address '%s': %w", m.Address, err)
	}
	if m.Timeout < 0 {
		return fmt.Errorf("milter %s: timeout must not be negative", m.Address)
	}
	if m.Timeout == 0 {
		m.Timeout = caddy.Duration(defaultTimeout)
	}
	switch m.DefaultAction {
	case "":
		m.DefaultAction = smtpapp.VerdictTempfail
	case smtpapp.VerdictTempfail, smtpapp.VerdictReject, smtpapp.VerdictAccept:
	default:
		return fmt.Errorf("milter %s: default_action: want accept, tempfail or reject, got '%s'", m.Address, m.DefaultAction)
	}
	if m.hostname, err = os.Hostname(); err != nil {
		m.hostname = "localhost"
	}
	m.options = []milter.Option{
		milter.WithReadTimeout(m.timeout()), milter.WithWriteTimeout(m.timeout()),
		milter.WithActions(offeredActions), milter.WithProtocols(offeredProtocol),
		milter.WithoutDefaultMacros(),
		milter.WithMacroRequest(milter.StageConnect, []milter.MacroName{milter.MacroMTAFQDN, milter.MacroDaemonName,
			milter.MacroClientAddr, milter.MacroClientName}),
		milter.WithMacroRequest(milter.StageMail, []milter.MacroName{milter.MacroAuthAuthen, milter.MacroMailAddr}),
		milter.WithMacroRequest(milter.StageHelo, []milter.MacroName{milter.MacroTlsVersion, milter.MacroCipher}),
		milter.WithMacroRequest(milter.StageRcpt, []milter.MacroName{milter.MacroRcptAddr}),
		milter.WithMacroRequest(milter.StageEOM, []milter.MacroName{milter.MacroQueueId}),
	}
	return nil
}

func (m *Milter) timeout() time.Duration { return time.Duration(m.Timeout) }

// parseAddress splits a milter address into a network and an address
// for net.Dial.
func parseAddress(a string) (network, addr string, err error) {
	switch {
	case a == "":
		return "", "", fmt.Errorf("missing")
	case strings.HasPrefix(a, "unix:/"):
		return "unix", strings.TrimPrefix(a, "unix:"), nil
	case strings.HasPrefix(a, "inet:"):
		a = strings.TrimPrefix(a, "inet:")
	}
	na, err := caddy.ParseNetworkAddress(a)
	if err != nil {
		return "", "", err
	}
	switch {
	case na.IsUnixNetwork():
		return "unix", na.Host, nil
	case !strings.HasPrefix(na.Network, "tcp"):
		return "", "", fmt.Errorf("network %s: want tcp or unix", na.Network)
	case na.Host == "" || na.StartPort == 0 || na.PortRangeSize() != 1:
		return "", "", fmt.Errorf("want host:port")
	}
	return na.Network, na.JoinHostPort(0), nil
}

// txKey keys a milter's session in the transaction's values.
type txKey struct{ m *Milter }

// CheckRecipient implements smtpapp.RecipientCheck: the session opens at
// the transaction's first recipient, and the milter judges each one.
func (m *Milter) CheckRecipient(ctx context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	if in.Tx == nil {
		return smtpapp.Accept()
	}
	s, ok := in.Tx.Value(txKey{m}).(*session)
	if !ok {
		s = m.newSession(in.Tx)
	}
	// The conversation ends with ctx (the check's deadline).
	defer context.AfterFunc(ctx, s.interrupt)()
	if !ok {
		s.start(envelope{ip: in.ClientIP, helo: in.Helo, sender: in.Sender, authUser: in.AuthUser, server: in.Server,
			tlsVersion: in.TLSVersion, tlsCipher: in.TLSCipher})
	}
	return s.recipient(in.Recipient)
}

// newSession makes the transaction's milter session.
func (m *Milter) newSession(tx *smtpapp.Transaction) *session {
	s := &session{m: m}
	tx.SetValue(txKey{m}, s)
	return s
}

// StartMessage implements smtpapp.MessageCheck. Without a session (the
// recipient stage did not run) one is started here with the whole
// envelope; the milter's refusal of a recipient is then ignored.
func (m *Milter) StartMessage(in *smtpapp.MessageInput) smtpapp.MessageJudge {
	if s, ok := in.Tx.Value(txKey{m}).(*session); ok {
		return s.startMessage(in.QueueID, nil)
	}
	if in.Tx == nil {
		return fixed(smtpapp.Accept())
	}
	s := m.newSession(in.Tx)
	return s.startMessage(in.QueueID, func() {
		s.start(envelope{ip: in.ClientIP, helo: in.Helo, sender: in.Sender, authUser: in.AuthUser, server: in.Server,
			tlsVersion: in.TLSVersion, tlsCipher: in.TLSCipher})
		for _, r := range in.Recipients {
			s.recipient(r)
		}
	})
}

// failVerdict is the default_action verdict for a milter that failed.
func (m *Milter) failVerdict(err error) smtpapp.Verdict {
	m.logger.Warn("milter failed", zap.String("milter", m.Address), zap.String("default_action", m.DefaultAction), zap.Error(err))
	return smtpapp.Verdict{Result: m.DefaultAction, Reason: "milter failed: " + err.Error(), Note: "error, " + m.DefaultAction}
}

// replyVerdict maps a milter's refusal to a verdict: its own reply when
// it gave a valid one, else 550 5.7.1 or 451 4.7.1.
func replyVerdict(act *milter.Action, stage string) smtpapp.Verdict {
	v := smtpapp.Verdict{Result: smtpapp.VerdictReject, Reason: "rejected by milter at " + stage, Note: "reject"}
	if act.Type == milter.ActionTempFail || act.Type == milter.ActionRejectWithCode && act.SMTPCode < 500 {
		v = smtpapp.Verdict{Result: smtpapp.VerdictTempfail, Reason: "tempfailed by milter at " + stage, Note: "tempfail"}
	}
	if act.Type == milter.ActionRejectWithCode {
		if r := parseReply(act.SMTPReply); r != nil {
			v.Reply = r
			v.Reason += ": " + act.SMTPReply
		}
	}
	return v
}

// parseReply parses a milter's SMTP reply ("550 5.7.1 text", possibly in
// several lines "550-..."): nil unless its code is 4xx or 5xx and its
// enhanced code, if any, of the same class.
func parseReply(s string) *smtp.SMTPError {
	var texts []string
	code := ""
	for line := range strings.SplitSeq(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if len(line) < 3 || code != "" && line[:3] != code || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return nil
		}
		code = line[:3]
		if len(line) > 4 {
			texts = append(texts, line[4:])
		}
	}
	if len(code) != 3 || (code[0] != '4' && code[0] != '5') || code[1] < '0' || code[1] > '9' || code[2] < '0' || code[2] > '9' {
		return nil
	}
	r := &smtp.SMTPError{Code: int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')}
	text := strings.Join(texts, " ")
	r.EnhancedCode = smtp.EnhancedCode{int(code[0] - '0'), 7, 1}
	if first, rest, _ := strings.Cut(text, " "); first != "" {
		var a, b, c int
		if n, err := fmt.Sscanf(first, "%d.%d.%d", &a, &b, &c); err == nil && n == 3 && fmt.Sprintf("%d.%d.%d", a, b, c) == first {
			if a != r.Code/100 {
				return nil
			}
			r.EnhancedCode, text = smtp.EnhancedCode{a, b, c}, rest
		}
	}
	if text == "" {
		text = "Rejected by policy"
	}
	r.Message = text
	return r
}

// ForTrustedClients implements smtpapp.TrustedClientCheck: a milter sees
// every client's mail, as with Postfix.
func (*Milter) ForTrustedClients() {}

// Interface guards
var (
	_ caddy.Provisioner          = (*Milter)(nil)
	_ smtpapp.TrustedClientCheck = (*Milter)(nil)
	_ smtpapp.RecipientCheck     = (*Milter)(nil)
	_ smtpapp.MessageCheck       = (*Milter)(nil)
)
