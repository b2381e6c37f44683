// Package caddyfile parses the `smtp` Caddyfile global option into the JSON
// config of the smtp app. Syntax:
//
//	{
//		smtp {
//			hostname               <host>
//			grace_period           <duration>
//			quarantine_retention   <duration>
//			automatic_certificates on|off
//			reuse_certificate_keys
//			tlsa_check off | {
//				interval  <duration>
//				warn      <duration>
//				resolvers <ip[:port]>...
//			}
//
//			server <name> {
//				listen           <address> [starttls|implicit_tls|no_tls]
//				hostname         <host>
//				require_tls
//				bare_line_endings reject|normalize
//				max_message_size <size>
//				max_recipients   <n>
//				max_connections  <n>
//				max_line_length  <n>
//				read_timeout     <duration>
//				write_timeout    <duration>
//				certificate_wait <duration>
//				tls {
//					<connection policy options>
//				}
//				route <domain> [<domain>...] {
//					<target> <args...>
//				}
//
//				authentication [<provider>] {
//					account <username> <password-hash> [<sender>...]
//				}
//				require_auth
//				relay_networks <ip|cidr> [<ip|cidr>...]
//				check <name> [<args...>] [{ ... }]   (e.g. dnsbl)
//
//				max_connections_per_ip        <n>|off
//				connection_rate_per_ip        <n>|off
//				message_rate_per_ip           <n>|off
//				recipient_rate_per_ip         <n>|off
//				limit_ipv4_prefix             <bits>
//				limit_ipv6_prefix             <bits>
//				max_messages_per_connection   <n>
//				max_recipients_per_connection <n>
//				max_bad_commands              <n>
//				max_auth_failures             <n>
//				max_session_duration          <duration>
//				tls_handshake_timeout         <duration>
//				greeting_delay                <duration>
//				tls_session_cache [{
//					max_sessions <n>
//					lifetime     <duration>
//				}]
//			}
//
//			queue {
//				path                    <dir>
//				max_age                 <duration>
//				retry_initial           <duration>
//				retry_max               <duration>
//				workers                 <n>
//				per_destination         <n>
//				messages_per_connection <n>
//				max_return_size         <size>
//				idle_timeout            <duration>
//				min_free                <size>
//				store                   segments|files
//			}
//
//			outbound {
//				<target> <args...>
//			}
//
//			large_messages off | {
//				threshold <size>
//				rate      <size per second>
//			}
//
//			tls_reporting {
//				organization <name>
//				contact      <address or URL>
//				from         <address>
//				resolvers    <ip[:port]>...
//			}
//
//			route [<domain>...] {
//				match {
//					recipient_domain <domain>...
//					sender           <address>...
//					sender_domain    <domain>...
//					remote_ip        <cidr>...
//					authenticated    [yes|no]
//				}
//				<target> <args...>
//			}
//		}
//	}
//
// A <target> is a module in the `smtp.targets` namespace with its arguments
// and, for some, a block of options:
//
//	maildir <path>
//
//	relay <host[:port]> [<host[:port]>...] {
//		tls             none|opportunistic|required
//		auth            <username> <password>
//		connect_timeout <duration>
//	}
//
//	mx {
//		resolvers       <ip[:port]> [<ip[:port]>...]
//		tls             none|opportunistic|required
//		connect_timeout <duration>
//		max_addresses   <n>
//		port            <port>
//	}
//
// Every option maps to the JSON field of the same name in smtpapp.App,
// smtpapp.Server, smtpapp.QueueConfig, smtpapp.Route, the target
// (maildir.Maildir, relay.Relay, mx.MX in modules/smtptargets) or the authentication
// provider (accounts.Accounts in modules/smtpauth), whose docs give meanings and defaults. The
// parts that differ from a plain copy:
//
//   - automatic_certificates takes `on` or `off` (default on).
//   - server may be given any number of times, with distinct names.
//   - listen may be given any number of times; its mode is one of
//     `starttls` (default), `implicit_tls` (TLS from the first byte, port 465)
//     and `no_tls`, which become the JSON modes `starttls`, `implicit` and
//     `off`.
//   - require_tls takes no argument.
//   - max_message_size and max_return_size are byte counts with an optional
//     unit: `1048576`, `25MB`, `50MiB`.
//   - grace_period applies to SMTP sessions only; Caddy's top-level
//     grace_period global option applies to its HTTP servers.
//   - durations are Caddy durations (`30s`, `5m`, `1d`); durations, sizes
//     and counts must be greater than zero, and a port is at most 65535.
//   - tls (in a server) holds one TLS connection policy with the same
//     options as the `connection_policy` block of Caddy's `tls` directive
//     (protocols, ciphers, curves, alpn, client_auth, default_sni, ...).
//     tls in a relay or mx target is the outbound STARTTLS level instead.
//   - tls_session_cache lets the server's clients resume TLS sessions
//     (smtpapp.TLSSessionCache); without a block it keeps the defaults. It
//     is off by default because Microsoft's SMTP client fails on Go's
//     session tickets: not for an MX that receives mail from the internet.
//   - queue replaces the former `spool_dir <dir>` option, which is now an
//     error: write `queue { path <dir> }`. An empty queue block keeps
//     every default.
//   - outbound holds exactly one target for recipients that no route
//     accepts (default `mx`); it takes no arguments of its own.
//   - route inside a server block gives that server its own routes, which
//     replace the app-level routes for mail it accepts (a gateway and its
//     backend in one Caddy).
//   - route takes recipient domains (`*.example.com` matches subdomains)
//     and a block with exactly one delivery target, e.g.
//     `maildir /var/mail/{domain}/{local}` or `relay mail.example.com`, and
//     optionally one match block of modules in the `smtp.matchers`
//     namespace that must all match. Without domains, a route needs a match
//     block, and it only picks the target for mail accepted otherwise (from
//     authenticated users or relay networks); see smtpapp.Route. Routes are
//     tried in order.
//   - relay takes one or more hosts, tried in order; its block is optional.
//     auth takes a username and a password; both may be placeholders such
//     as `{env.RELAY_PASSWORD}`, which stay as written in the JSON and are
//     replaced when the config is loaded.
//   - mx takes no arguments; its block is optional. resolvers takes one or
//     more IP addresses with an optional port.
//   - authentication turns on SMTP AUTH (offered over TLS only) with a
//     module in the `smtp.authentication.providers` namespace: `authentication
//     <provider> <args...> { ... }` hands the provider its name, arguments
//     and block. Without a provider name it is the built-in `accounts`
//     provider, whose block lists one `account` line per user: a username,
//     a password hash from `caddy hash-password` (bcrypt, or argon2id with
//     `--algorithm argon2id`) or a placeholder holding one such as
//     `{env.ALICE_HASH}`, and optionally the envelope senders the user may
//     use (addresses, `@domain` or `*`). Usernames must be distinct.
//   - require_auth takes no argument and needs an authentication block in
//     the same server.
//   - relay_networks takes one or more IP addresses or CIDR networks
//     (`10.0.0.0/8`, `2001:db8::/32`), checked when the Caddyfile is
//     adapted.
//   - max_connections_per_ip, connection_rate_per_ip, message_rate_per_ip
//     and recipient_rate_per_ip take a count or `off` for no limit (-1 in
//     the JSON); the three rates are per minute.
//
// A server needs no listen addresses when caddy-l4 hands it connections:
// in the `layer4` global option, the handler `smtp <server> [implicit_tls]`
// ends a route (after `proxy_protocol`, for clients behind a load
// balancer), as in examples/proxy-protocol.
//
// Options other than server, route, listen and account may be given once,
// and so may each option in a queue block or a target's block. The global
// options block may hold several `smtp` blocks: they are merged as if they
// were one, so a server name or single-valued option (queue and outbound
// included) may still appear only once across them, and routes keep their
// order.
package caddyfile

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycf "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"github.com/dustin/go-humanize"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("smtp", parse)
}

// Module namespaces of the smtp app's pluggable parts.
const (
	targetNamespace  = "smtp.targets"                  // route delivery targets
	authNamespace    = "smtp.authentication.providers" // SMTP AUTH providers
	matcherNamespace = "smtp.matchers"                 // route matchers
	checkNamespace   = "smtp.checks"                   // checks of routes
)

// defaultAuthProvider is the provider of an `authentication` block that
// names none.
const defaultAuthProvider = "accounts"

// listenModes maps the Caddyfile listener modes to the JSON ones.
var listenModes = map[string]string{
	"starttls":     smtpapp.TLSStartTLS,
	"implicit_tls": smtpapp.TLSImplicit,
	"no_tls":       smtpapp.TLSOff,
}

// parse sets up the smtp app from one `smtp` global option block. When an
// earlier block was parsed, existingVal holds its result, which this block
// extends.
func parse(d *caddycf.Dispenser, existingVal any) (any, error) {
	d.Next() // consume option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}

	app := new(smtpapp.App)
	if existingVal != nil {
		prev, ok := existingVal.(httpcaddyfile.App)
		if !ok {
			return nil, d.Errf("existing smtp value of unexpected type %T", existingVal)
		}
		if err := json.Unmarshal(prev.Value, app); err != nil {
			return nil, d.Errf("decoding earlier smtp block: %v", err)
		}
	}

	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "hostname":
			err = setOnce(d, "smtp", &app.Hostname, stringArg)
		case "grace_period":
			err = setOnce(d, "smtp", &app.GracePeriod, durationArg)
		case "quarantine_retention":
			err = setOnce(d, "smtp", &app.QuarantineRetention, durationArg)
		case "spool_dir":
			return nil, d.Err("smtp option 'spool_dir' was replaced by the queue block: 'queue { path <dir> }'")
		case "automatic_certificates":
			err = setOnce(d, "smtp", &app.AutomaticCertificates, onOffArg)
		case "reuse_certificate_keys":
			err = setOnce(d, "smtp", &app.ReuseCertificateKeys, flagArg)
		case "queue":
			if app.Queue != nil {
				return nil, duplicateErr(d, "smtp")
			}
			app.Queue, err = parseQueue(d.NewFromNextSegment())
		case "outbound":
			if app.Outbound != nil {
				return nil, duplicateErr(d, "smtp")
			}
			app.Outbound, err = parseOutbound(d.NewFromNextSegment())
		case "tlsa_check":
			if app.TLSACheck != nil {
				return nil, duplicateErr(d, "smtp")
			}
			app.TLSACheck, err = parseTLSACheck(d.NewFromNextSegment())
		case "large_messages":
			if app.LargeMessages != nil {
				return nil, duplicateErr(d, "smtp")
			}
			app.LargeMessages, err = parseLargeMessages(d.NewFromNextSegment())
		case "tls_reporting":
			if app.TLSReporting != nil {
				return nil, duplicateErr(d, "smtp")
			}
			app.TLSReporting, err = parseTLSReporting(d.NewFromNextSegment())
		case "server":
			err = parseServer(d.NewFromNextSegment(), app)
		case "route":
			var r *smtpapp.Route
			if r, err = parseRoute(d.NewFromNextSegment()); err == nil {
				app.Routes = append(app.Routes, r)
			}
		default:
			return nil, d.Errf("unrecognized smtp option '%s'", opt)
		}
		if err != nil {
			return nil, err
		}
	}

	val, err := json.Marshal(app)
	if err != nil {
		return nil, fmt.Errorf("encoding smtp app: %w", err)
	}
	// After the block parsed: a more precise error about an option that
	// ended up in the wrong block comes first.
	if err := checkClosed(d.File()); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "smtp", Value: val}, nil
}

// parseServer parses one `server <name> { ... }` segment into app.Servers.
func parseServer(d *caddycf.Dispenser, app *smtpapp.App) error {
	d.Next() // consume "server"
	name, err := nameArg(d)
	if err != nil {
		return err
	}
	if _, dup := app.Servers[name]; dup {
		return d.Errf("duplicate smtp server '%s'", name)
	}

	const scope = "smtp server"
	srv := new(smtpapp.Server)
	var requireAuth caddycf.Token // where require_auth was given
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "listen":
			var l *smtpapp.Listener
			if l, err = listenArgs(d); err == nil {
				srv.Listen = append(srv.Listen, l)
			}
		case "hostname":
			err = setOnce(d, scope, &srv.Hostname, stringArg)
		case "require_tls":
			err = setOnce(d, scope, &srv.RequireTLS, flagArg)
		case "bare_line_endings":
			err = setOnce(d, scope, &srv.BareLineEndings, func(d *caddycf.Dispenser) (string, error) {
				v, err := stringArg(d)
				if err == nil && v != "reject" && v != "normalize" {
					err = d.Errf("bare_line_endings must be reject or normalize, not '%s'", v)
				}
				return v, err
			})
		case "max_message_size":
			err = setOnce(d, scope, &srv.MaxMessageSize, sizeArg)
		case "max_recipients":
			err = setOnce(d, scope, &srv.MaxRecipients, intArg)
		case "max_connections":
			err = setOnce(d, scope, &srv.MaxConnections, intArg)
		case "max_line_length":
			err = setOnce(d, scope, &srv.MaxLineLength, intArg)
		case "read_timeout":
			err = setOnce(d, scope, &srv.ReadTimeout, durationArg)
		case "write_timeout":
			err = setOnce(d, scope, &srv.WriteTimeout, durationArg)
		case "certificate_wait":
			err = setOnce(d, scope, &srv.CertificateWait, durationArg)
		case "authentication":
			if srv.Authentication != nil {
				return duplicateErr(d, scope)
			}
			srv.Authentication, err = parseAuthentication(d.NewFromNextSegment())
		case "require_auth":
			requireAuth = d.Token()
			err = setOnce(d, scope, &srv.RequireAuth, flagArg)
		case "check":
			var raw json.RawMessage
			raw, err = unmarshalCheck(d)
			srv.Checks = append(srv.Checks, raw)
		case "relay_networks":
			if srv.RelayNetworks != nil {
				return duplicateErr(d, scope)
			}
			srv.RelayNetworks, err = networksArg(d)
		case "max_connections_per_ip":
			err = setOnce(d, scope, &srv.MaxConnectionsPerIP, limitArg)
		case "connection_rate_per_ip":
			err = setOnce(d, scope, &srv.ConnectionRatePerIP, limitArg)
		case "message_rate_per_ip":
			err = setOnce(d, scope, &srv.MessageRatePerIP, limitArg)
		case "recipient_rate_per_ip":
			err = setOnce(d, scope, &srv.RecipientRatePerIP, limitArg)
		case "limit_ipv4_prefix":
			err = setOnce(d, scope, &srv.LimitIPv4Prefix, prefixArg(32))
		case "limit_ipv6_prefix":
			err = setOnce(d, scope, &srv.LimitIPv6Prefix, prefixArg(128))
		case "max_messages_per_connection":
			err = setOnce(d, scope, &srv.MaxMessagesPerConnection, intArg)
		case "max_recipients_per_connection":
			err = setOnce(d, scope, &srv.MaxRecipientsPerConnection, intArg)
		case "max_bad_commands":
			err = setOnce(d, scope, &srv.MaxBadCommands, intArg)
		case "max_auth_failures":
			err = setOnce(d, scope, &srv.MaxAuthFailures, intArg)
		case "max_session_duration":
			err = setOnce(d, scope, &srv.MaxSessionDuration, durationArg)
		case "tls_handshake_timeout":
			err = setOnce(d, scope, &srv.TLSHandshakeTimeout, durationArg)
		case "greeting_delay":
			err = setOnce(d, scope, &srv.GreetingDelay, durationArg)
		case "tls_session_cache":
			err = setOnce(d, scope, &srv.TLSSessionCache, parseTLSSessionCache)
		case "tls":
			if len(srv.TLSConnectionPolicies) > 0 {
				return duplicateErr(d, scope)
			}
			cp := new(caddytls.ConnectionPolicy)
			err = cp.UnmarshalCaddyfile(d.NewFromNextSegment())
			srv.TLSConnectionPolicies = caddytls.ConnectionPolicies{cp}
		case "route":
			var r *smtpapp.Route
			if r, err = parseRoute(d.NewFromNextSegment()); err == nil {
				srv.Routes = append(srv.Routes, r)
			}
		default:
			return d.Errf("unrecognized smtp server option '%s'", opt)
		}
		if err != nil {
			return err
		}
	}
	if srv.RequireAuth && srv.Authentication == nil {
		return errAt(requireAuth, "smtp server '%s': require_auth needs an authentication block in the same server", name)
	}

	if app.Servers == nil {
		app.Servers = make(map[string]*smtpapp.Server)
	}
	app.Servers[name] = srv
	return nil
}

// parseTLSSessionCache parses `tls_session_cache [{ max_sessions <n>
// lifetime <duration> }]`.
func parseTLSSessionCache(d *caddycf.Dispenser) (*smtpapp.TLSSessionCache, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	c := new(smtpapp.TLSSessionCache)
	const scope = "tls_session_cache"
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "max_sessions":
			err = setOnce(d, scope, &c.MaxSessions, intArg)
		case "lifetime":
			err = setOnce(d, scope, &c.Lifetime, durationArg)
		default:
			return nil, d.Errf("unrecognized tls_session_cache option '%s'", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// listenArgs parses `listen <address> [<mode>]`.
func listenArgs(d *caddycf.Dispenser) (*smtpapp.Listener, error) {
	a, err := args(d, 1, 2)
	if err != nil {
		return nil, err
	}
	if _, err := smtpapp.ParseListenAddress(a[0]); err != nil {
		return nil, d.Errf("listen %s: %v", a[0], err)
	}
	l := &smtpapp.Listener{Address: a[0]}
	if len(a) == 2 {
		mode, ok := listenModes[a[1]]
		if !ok {
			return nil, d.Errf("listen %s: unknown tls mode '%s' (want starttls, implicit_tls or no_tls)", a[0], a[1])
		}
		l.TLS = mode
	}
	return l, nil
}

// parseAuthentication parses the `authentication [<provider>] { ... }`
// segment into a module in the smtp.authentication.providers namespace. The provider
// gets the tokens from its name on (from `authentication` when none is
// named, which means the accounts provider), as a route target does.
func parseAuthentication(d *caddycf.Dispenser) (json.RawMessage, error) {
	d.Next() // consume "authentication"
	provider := defaultAuthProvider
	if d.NextArg() {
		provider = d.Val()
	}
	return inlineModule(d, authNamespace, "provider", provider, "authentication provider")
}

// inlineModule unmarshals the module name of namespace from the tokens of
// d (from its name on) into its JSON with the name under inlineKey; what
// names the kind of module in errors.
func inlineModule(d *caddycf.Dispenser, namespace, inlineKey, name, what string) (json.RawMessage, error) {
	id := namespace + "." + name
	if _, err := caddy.GetModule(id); err != nil {
		return nil, d.Errf("unrecognized %s '%s' (known: %s)", what, name, knownModules(namespace))
	}
	mod, err := caddycf.UnmarshalModule(d, id)
	if err != nil {
		return nil, err
	}
	var warnings []caddyconfig.Warning
	raw := caddyconfig.JSONModuleObject(mod, inlineKey, name, &warnings)
	if len(warnings) > 0 {
		return nil, d.Errf("encoding %s '%s': %s", what, name, warnings[0].Message)
	}
	return raw, nil
}

// parseQueue parses the `queue { ... }` segment.
func parseQueue(d *caddycf.Dispenser) (*smtpapp.QueueConfig, error) {
	d.Next() // consume "queue"
	if d.NextArg() {
		return nil, d.Err("queue takes no arguments; give the spool directory as 'path <dir>' in its block")
	}
	const scope = "smtp queue"
	q := new(smtpapp.QueueConfig)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "path":
			err = setOnce(d, scope, &q.Path, stringArg)
		case "max_age":
			err = setOnce(d, scope, &q.MaxAge, durationArg)
		case "retry_initial":
			err = setOnce(d, scope, &q.RetryInitial, durationArg)
		case "retry_max":
			err = setOnce(d, scope, &q.RetryMax, durationArg)
		case "workers":
			err = setOnce(d, scope, &q.Workers, intArg)
		case "per_destination":
			err = setOnce(d, scope, &q.PerDestination, intArg)
		case "messages_per_connection":
			err = setOnce(d, scope, &q.MessagesPerConnection, intArg)
		case "max_return_size":
			err = setOnce(d, scope, &q.MaxReturnSize, sizeArg)
		case "idle_timeout":
			err = setOnce(d, scope, &q.IdleTimeout, durationArg)
		case "min_free":
			err = setOnce(d, scope, &q.MinFree, sizeArg)
		case "delay_warning":
			err = setOnce(d, scope, &q.DelayWarning, func(d *caddycf.Dispenser) (caddy.Duration, error) {
				if d.NextArg() {
					if d.Val() == "off" {
						if d.NextArg() {
							return 0, d.ArgErr()
						}
						return -1, nil // no delay warnings
					}
					d.Prev()
				}
				return durationArg(d)
			})
		case "postmaster":
			err = setOnce(d, scope, &q.Postmaster, stringArg)
		case "store":
			if q.Store != nil {
				return nil, duplicateErr(d, scope)
			}
			q.Store, err = parseStore(d)
		default:
			return nil, d.Errf("unrecognized smtp queue option '%s'", opt)
		}
		if err != nil {
			return nil, err
		}
	}
	return q, nil
}

// parseStore parses `store segments|files` (the short form, a JSON
// string) or `store <module> { ... }` for a store module with Caddyfile
// support, such as `store postgres { dsn ... }`.
func parseStore(d *caddycf.Dispenser) (json.RawMessage, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	name := d.Val()
	if name == "segments" || name == "files" {
		if d.NextArg() {
			return nil, d.Errf("queue store %s takes no arguments", name)
		}
		return caddyconfig.JSON(name, nil), nil
	}
	if _, err := caddy.GetModule("smtp.queue.stores." + name); err != nil {
		return nil, d.Errf("queue store must be segments, files or a store module such as postgres, not '%s'", name)
	}
	mod, err := caddycf.UnmarshalModule(d, "smtp.queue.stores."+name)
	if err != nil {
		return nil, err // the module's own error, with its position
	}
	return caddyconfig.JSONModuleObject(mod, "module", name, nil), nil
}

// offArg consumes the name of an `<option> off | { ... }` segment and
// reports whether it is `off`.
func offArg(d *caddycf.Dispenser) (bool, error) {
	d.Next() // the option's name
	name := d.Val()
	if !d.NextArg() {
		return false, nil
	}
	if d.Val() != "off" || d.NextArg() {
		return false, d.Errf("%s takes 'off' or a block, not '%s'", name, d.Val())
	}
	return true, nil
}

// parseTLSACheck parses the `tlsa_check off | { ... }` segment.
func parseTLSACheck(d *caddycf.Dispenser) (*smtpapp.TLSACheck, error) {
	c := new(smtpapp.TLSACheck)
	var err error
	if c.Disabled, err = offArg(d); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if c.Disabled {
			return nil, d.Err("tlsa_check off takes no block")
		}
		if seen[opt] {
			return nil, d.Errf("duplicate smtp tlsa_check option '%s'", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		if len(args) == 0 {
			return nil, d.ArgErr()
		}
		switch opt {
		case "interval", "warn":
			if len(args) != 1 {
				return nil, d.ArgErr()
			}
			v, err := caddy.ParseDuration(args[0])
			if err != nil || v <= 0 {
				return nil, d.Errf("tlsa_check %s: want a positive duration, got '%s'", opt, args[0])
			}
			if opt == "interval" {
				c.Interval = caddy.Duration(v)
			} else {
				c.Warn = caddy.Duration(v)
			}
		case "resolvers":
			c.Resolvers = args
		default:
			return nil, d.Errf("unrecognized smtp tlsa_check option '%s'", opt)
		}
	}
	return c, nil
}

// parseLargeMessages parses `large_messages off` or
// `large_messages { threshold <size> rate <size> }` (rate per second).
func parseLargeMessages(d *caddycf.Dispenser) (*smtpapp.LargeMessages, error) {
	c := new(smtpapp.LargeMessages)
	var err error
	if c.Disabled, err = offArg(d); err != nil {
		return nil, err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if c.Disabled {
			return nil, d.Err("large_messages off takes no block")
		}
		switch d.Val() {
		case "threshold":
			err = setOnce(d, "smtp large_messages", &c.Threshold, sizeArg)
		case "rate":
			err = setOnce(d, "smtp large_messages", &c.Rate, sizeArg)
		default:
			return nil, d.Errf("unrecognized smtp large_messages option '%s'", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// parseTLSReporting parses the `tls_reporting { ... }` segment.
func parseTLSReporting(d *caddycf.Dispenser) (*smtpapp.TLSReporting, error) {
	d.Next() // consume "tls_reporting"
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	r := new(smtpapp.TLSReporting)
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return nil, d.Errf("duplicate smtp tls_reporting option '%s'", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		if len(args) == 0 {
			return nil, d.ArgErr()
		}
		switch opt {
		case "organization":
			r.Organization = strings.Join(args, " ")
		case "contact", "from":
			if len(args) != 1 {
				return nil, d.ArgErr()
			}
			if opt == "contact" {
				r.Contact = args[0]
			} else {
				r.From = args[0]
			}
		case "resolvers":
			r.Resolvers = args
		default:
			return nil, d.Errf("unrecognized smtp tls_reporting option '%s'", opt)
		}
	}
	if r.Organization == "" || r.Contact == "" {
		return nil, d.Err("tls_reporting needs organization and contact")
	}
	return r, nil
}

// parseOutbound parses the `outbound { <target> <args...> }` segment.
func parseOutbound(d *caddycf.Dispenser) (json.RawMessage, error) {
	d.Next() // consume "outbound"
	if d.NextArg() {
		return nil, d.Err("outbound takes no arguments; give its target in its block, e.g. 'outbound { mx }'")
	}
	return parseTarget(d, "outbound", "mx")
}

// parseRoute parses one `route [<domains>...] { [match { ... }] <target> <args...> }`
// segment. Without domains, the route needs a match block.
func parseRoute(d *caddycf.Dispenser) (*smtpapp.Route, error) {
	d.Next() // consume "route"
	start := d.Token()
	r := &smtpapp.Route{Domains: d.RemainingArgs()}
	var target string
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if name == "check" {
			raw, err := unmarshalCheck(d)
			if err != nil {
				return nil, err
			}
			r.Checks = append(r.Checks, raw)
			continue
		}
		if name == "match" {
			if r.Match != nil {
				return nil, d.Err("route has a second match block; put all its matchers in one")
			}
			m, err := parseMatch(d)
			if err != nil {
				return nil, err
			}
			r.Match = m
			continue
		}
		if target != "" {
			return nil, d.Errf("route has a second delivery target '%s' (already has '%s'); it takes exactly one", name, target)
		}
		raw, err := unmarshalTarget(d, "route", name)
		if err != nil {
			return nil, err
		}
		r.Deliver, target = raw, name
	}
	if len(r.Domains) == 0 && r.Match == nil {
		return nil, errAt(start, "route needs recipient domains ('route example.com { ... }') or a match block")
	}
	if target == "" {
		return nil, errAt(start, "route has no delivery target; give one in its block, e.g. 'maildir <path>'")
	}
	return r, nil
}

// parseMatch parses a route's `match { <matcher> <args...> ... }` block:
// modules of the smtp.matchers namespace, each at most once.
func parseMatch(d *caddycf.Dispenser) (caddy.ModuleMap, error) {
	start := d.Token()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	set := caddy.ModuleMap{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if _, dup := set[name]; dup {
			return nil, d.Errf("duplicate matcher '%s'", name)
		}
		id := matcherNamespace + "." + name
		if _, err := caddy.GetModule(id); err != nil {
			return nil, d.Errf("unrecognized matcher '%s' (known: %s)", name, knownModules(matcherNamespace))
		}
		mod, err := caddycf.UnmarshalModule(d, id)
		if err != nil {
			return nil, err
		}
		var warnings []caddyconfig.Warning
		set[name] = caddyconfig.JSON(mod, &warnings)
		if len(warnings) > 0 {
			return nil, d.Errf("encoding matcher '%s': %s", name, warnings[0].Message)
		}
	}
	if len(set) == 0 {
		return nil, errAt(start, "empty match block; give matchers such as 'sender_domain example.com' or 'authenticated'")
	}
	return set, nil
}

// parseTarget parses the block of outbound (owner), which holds exactly
// one delivery target: a module in the smtp.targets namespace, its
// arguments and its own block. example shows a target in the error for an
// empty block.
func parseTarget(d *caddycf.Dispenser, owner, example string) (json.RawMessage, error) {
	var target string
	var raw json.RawMessage
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if target != "" {
			return nil, d.Errf("%s has a second delivery target '%s' (already has '%s'); it takes exactly one", owner, name, target)
		}
		var err error
		if raw, err = unmarshalTarget(d, owner, name); err != nil {
			return nil, err
		}
		target = name
	}
	if target == "" {
		d.Reset()
		d.Next()
		return nil, d.Errf("%s has no delivery target; give one in its block, e.g. '%s'", owner, example)
	}
	return raw, nil
}

// unmarshalTarget reads the target called name (a module in the
// smtp.targets namespace) at the dispenser's position into its JSON.
func unmarshalTarget(d *caddycf.Dispenser, owner, name string) (json.RawMessage, error) {
	return inlineModule(d, targetNamespace, "target", name, owner+" target")
}

// unmarshalCheck parses `check <name> [<args...>] [{ ... }]` in a route
// block into a module of the smtp.checks namespace; the module gets the
// tokens from its name on.
func unmarshalCheck(d *caddycf.Dispenser) (json.RawMessage, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	return inlineModule(d, checkNamespace, "check", d.Val(), "check")
}

// knownModules lists the names of the modules registered in namespace.
func knownModules(namespace string) string {
	var names []string
	for _, m := range caddy.GetModules(namespace) {
		names = append(names, m.ID.Name())
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// errAt returns a parse error positioned at tok, for a mistake found after
// the dispenser has moved on.
func errAt(tok caddycf.Token, format string, args ...any) error {
	d := caddycf.NewDispenser([]caddycf.Token{tok})
	d.Next()
	return d.Errf(format, args...)
}

// setOnce parses the current option with parseArgs into *dst. A non-zero
// *dst means the option was given before (in this block or in an earlier
// `smtp` block), which is an error; the parsers never return a zero value
// without an error, so zero always means unset.
func setOnce[T comparable](d *caddycf.Dispenser, scope string, dst *T, parseArgs func(*caddycf.Dispenser) (T, error)) error {
	var zero T
	if *dst != zero {
		return duplicateErr(d, scope)
	}
	v, err := parseArgs(d)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

// duplicateErr reports the current option as given twice in scope.
func duplicateErr(d *caddycf.Dispenser, scope string) error {
	return d.Errf("duplicate %s option '%s'", scope, d.Val())
}

// args returns the arguments of the current option, checking that there
// are between minArgs and maxArgs of them and that no block follows.
func args(d *caddycf.Dispenser, minArgs, maxArgs int) ([]string, error) {
	opt := d.Val()
	a := d.RemainingArgs()
	if len(a) < minArgs || len(a) > maxArgs {
		return nil, d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		d.Prev() // back to the '{' on the option's line
		return nil, d.Errf("option '%s' takes no block", opt)
	}
	return a, nil
}

// stringArg returns the single non-empty argument of the current option.
func stringArg(d *caddycf.Dispenser) (string, error) {
	opt := d.Val()
	a, err := args(d, 1, 1)
	if err != nil {
		return "", err
	}
	if a[0] == "" {
		return "", d.Errf("%s: empty value", opt)
	}
	return a[0], nil
}

// nameArg returns the single non-empty argument of the current option,
// leaving the block that follows it to the caller.
func nameArg(d *caddycf.Dispenser) (string, error) {
	opt := d.Val()
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	if v == "" {
		return "", d.Errf("%s: empty name", opt)
	}
	return v, nil
}

// durationArg parses the single argument of the current option as a
// positive Caddy duration.
func durationArg(d *caddycf.Dispenser) (caddy.Duration, error) {
	opt := d.Val()
	v, err := stringArg(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s: invalid duration '%s': %v", opt, v, err)
	}
	if dur <= 0 {
		return 0, d.Errf("%s: duration must be greater than zero, got '%s'", opt, v)
	}
	return caddy.Duration(dur), nil
}

// intArg parses the single argument of the current option as a positive
// integer.
func intArg(d *caddycf.Dispenser) (int, error) {
	opt := d.Val()
	v, err := stringArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, d.Errf("%s: want a positive integer, got '%s'", opt, v)
	}
	return n, nil
}

// prefixArg parses the single argument of the current option as a prefix
// length from 1 to bits.
func prefixArg(bits int) func(d *caddycf.Dispenser) (int, error) {
	return func(d *caddycf.Dispenser) (int, error) {
		opt := d.Val()
		v, err := stringArg(d)
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(strings.TrimPrefix(v, "/"))
		if err != nil || n < 1 || n > bits {
			return 0, d.Errf("%s: want a prefix length from 1 to %d, got '%s'", opt, bits, v)
		}
		return n, nil
	}
}

// limitArg parses the single argument of the current option as a positive
// integer, or `off` for no limit, which becomes -1 (negative means no
// limit in the JSON).
func limitArg(d *caddycf.Dispenser) (int, error) {
	opt := d.Val()
	v, err := stringArg(d)
	if err != nil {
		return 0, err
	}
	if v == "off" {
		return -1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, d.Errf("%s: want a positive integer or 'off', got '%s'", opt, v)
	}
	return n, nil
}

// networksArg returns the one or more arguments of the current option,
// each an IP address or a CIDR network.
func networksArg(d *caddycf.Dispenser) ([]string, error) {
	opt := d.Val()
	a, err := args(d, 1, math.MaxInt)
	if err != nil {
		return nil, err
	}
	for _, v := range a {
		if net.ParseIP(v) != nil {
			continue
		}
		if _, _, err := net.ParseCIDR(v); err != nil {
			return nil, d.Errf("%s: '%s' is not an IP address or CIDR network", opt, v)
		}
	}
	return a, nil
}

// sizeArg parses the single argument of the current option as a positive
// byte count such as `1048576`, `25MB` or `50MiB`.
func sizeArg(d *caddycf.Dispenser) (int64, error) {
	opt := d.Val()
	v, err := stringArg(d)
	if err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(v)
	if err != nil {
		return 0, d.Errf("%s: invalid size '%s': %v", opt, v, err)
	}
	if n == 0 {
		return 0, d.Errf("%s: size must be greater than zero, got '%s'", opt, v)
	}
	if n > math.MaxInt64 {
		return 0, d.Errf("%s: size '%s' is too large", opt, v)
	}
	return int64(n), nil
}

// onOffArg parses the single argument of the current option, `on` or
// `off`, into a set *bool.
func onOffArg(d *caddycf.Dispenser) (*bool, error) {
	opt := d.Val()
	v, err := stringArg(d)
	if err != nil {
		return nil, err
	}
	if v != "on" && v != "off" {
		return nil, d.Errf("%s: want 'on' or 'off', got '%s'", opt, v)
	}
	on := v == "on"
	return &on, nil
}

// flagArg checks that the current option has no argument and returns true.
func flagArg(d *caddycf.Dispenser) (bool, error) {
	if _, err := args(d, 0, 0); err != nil {
		return false, err
	}
	return true, nil
}

// checkClosed reads the Caddyfile again and refuses it if a block is still
// open at its end. Caddy's parser lets the end of the file close the global
// options block, so a block left open inside it (a route or server whose
// "}" is missing) silently takes in the options after it and the file's
// last "}" closes it. The file is read only when it is a file: a Caddyfile
// from stdin is not checked.
func checkClosed(filename string) error {
	body, err := os.ReadFile(filename)
	if err != nil {
		return nil
	}
	tokens, err := caddycf.Tokenize(body, filename)
	if err != nil {
		return nil // the parser reports it
	}
	var open []int // lines of the blocks still open
	for _, tok := range tokens {
		if tok.File != filename {
			continue // imported tokens balance in their own file
		}
		switch tok.Text {
		case "{":
			open = append(open, tok.Line)
		case "}":
			if len(open) == 0 {
				return nil // the parser reports it
			}
			open = open[:len(open)-1]
		}
	}
	if len(open) > 0 {
		return fmt.Errorf("%s:%d: this block is not closed at the end of the file: a '}' is missing in it "+
			"or in a block inside it, so the options after that block were read as part of it", filename, open[0])
	}
	return nil
}
