// Package caddysmtp is the caddy-smtp plugin: an SMTP mail gateway inside
// Caddy. Importing it (or building Caddy with `xcaddy build --with
// github.com/caddy-smtp/caddy-smtp`) registers the `smtp` app, the `smtp`
// Caddyfile global option, the `caddy smtp` commands and the standard set
// of guest modules. A build that wants less imports smtpapp and the module
// packages it needs one by one (smtpapp alone links no caddy-l4).
package caddysmtp

import (
	_ "github.com/caddy-smtp/caddy-smtp/caddyfile"
	_ "github.com/caddy-smtp/caddy-smtp/cmdsmtp"
	_ "github.com/caddy-smtp/caddy-smtp/modules/l4smtp"
	_ "github.com/caddy-smtp/caddy-smtp/modules/mtasts"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpadmin"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpauth/accounts"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpmatchers"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/files"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/maildir"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/mx"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/relay"
	_ "github.com/caddy-smtp/caddy-smtp/smtpapp"
)
