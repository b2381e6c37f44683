// Package standard imports the standard guest modules of the smtp app:
// delivery targets, queue stores, the accounts provider, route matchers,
// the admin API, the MTA-STS handler and the caddy-l4 handler. The plugin
// (module.go) imports it; so do tests that load configs using them.
package standard

import (
	_ "github.com/caddy-smtp/caddy-smtp/modules/l4smtp"
	_ "github.com/caddy-smtp/caddy-smtp/modules/mtasts"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpadmin"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpauth/accounts"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/callout"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/dkim"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/dkimsign"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/dmarc"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/dnsbl"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/helo"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/iprev"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/ldap"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/lists"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/milter"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/recipients"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/rspamd"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/spf"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpdns"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpmatchers"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpquarantine"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstatus"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/files"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/pgqueue"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/lmtp"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/maildir"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/mx"
	_ "github.com/caddy-smtp/caddy-smtp/modules/smtptargets/relay"
	_ "github.com/caddy-smtp/caddy-smtp/modules/storage/pgstorage"
	_ "github.com/caddy-smtp/caddy-smtp/smtpapp"
)
