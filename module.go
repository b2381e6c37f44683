// Package caddysmtp is the caddy-smtp plugin: an SMTP mail gateway inside
// Caddy. Importing it (or building Caddy with `xcaddy build --with
// github.com/caddy-smtp/caddy-smtp`) registers the `smtp` app, its delivery
// targets, its queue stores and the `smtp` Caddyfile global option.
package caddysmtp

import (
	_ "github.com/caddy-smtp/caddy-smtp/caddyfile"
	_ "github.com/caddy-smtp/caddy-smtp/cmdsmtp"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/files"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	_ "github.com/caddy-smtp/caddy-smtp/smtpapp"
)
