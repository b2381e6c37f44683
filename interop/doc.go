// Package interop is the interoperability suite of caddy-smtp: it runs the
// gateway (Caddy built with this plugin, as a separate process) against
// real mail software — a private Postfix instance in both directions,
// swaks, openssl s_client, testssl.sh and the Pebble ACME server — all on
// loopback. The package has no code of its own; everything is in its
// tests. Tests skip locally when a program is missing and fail under
// CI=true (.ci/run installs them).
package interop
