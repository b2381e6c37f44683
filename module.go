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
	_ "github.com/caddy-smtp/caddy-smtp/modules/standard"
)
