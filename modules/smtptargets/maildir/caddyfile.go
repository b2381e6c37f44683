package maildir

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the maildir target from Caddyfile tokens, as
// used inside a route block of the `smtp` global option. Syntax:
//
//	maildir <path> [create_mailboxes]
func (m *Maildir) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume target name
	if !d.NextArg() {
		return d.ArgErr()
	}
	m.Path = d.Val()
	if d.NextArg() {
		if d.Val() != "create_mailboxes" {
			return d.Errf("maildir: unknown option '%s' (want create_mailboxes)", d.Val())
		}
		m.CreateMailboxes = true
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if m.Path == "" {
		return d.Err("maildir: empty path")
	}
	if d.NextBlock(0) {
		d.Prev() // back to the '{' on the target's line
		return d.Err("maildir takes no block")
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Maildir)(nil)
