package smtpmatchers

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// listArgs reads `<matcher> <value>...`: at least one value, no block.
func listArgs(d *caddyfile.Dispenser) ([]string, error) {
	d.Next() // the matcher name
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return nil, d.Errf("matcher takes no block")
	}
	return args, nil
}

// UnmarshalCaddyfile reads `recipient_domain <domain>...`.
func (m *RecipientDomain) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	args, err := listArgs(d)
	*m = append(*m, args...)
	return err
}

// UnmarshalCaddyfile reads `sender <address>...` (`<>`: the null sender).
func (m *Sender) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	args, err := listArgs(d)
	*m = append(*m, args...)
	return err
}

// UnmarshalCaddyfile reads `sender_domain <domain>...`.
func (m *SenderDomain) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	args, err := listArgs(d)
	*m = append(*m, args...)
	return err
}

// UnmarshalCaddyfile reads `remote_ip <cidr|address>...`.
func (m *RemoteIP) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	args, err := listArgs(d)
	m.Ranges = append(m.Ranges, args...)
	return err
}

// UnmarshalCaddyfile reads `authenticated [yes|no]` (default yes).
func (m *Authenticated) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	*m = true
	if d.NextArg() {
		switch d.Val() {
		case "yes":
		case "no":
			*m = false
		default:
			return d.Errf("authenticated takes yes or no, not '%s'", d.Val())
		}
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("matcher takes no block")
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*RecipientDomain)(nil)
	_ caddyfile.Unmarshaler = (*Sender)(nil)
	_ caddyfile.Unmarshaler = (*SenderDomain)(nil)
	_ caddyfile.Unmarshaler = (*RemoteIP)(nil)
	_ caddyfile.Unmarshaler = (*Authenticated)(nil)
)
