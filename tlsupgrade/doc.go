// Package tlsupgrade implements STARTTLS for the outbound side of the SMTP
// gateway: it connects to a next hop, greets it with our own EHLO name,
// upgrades the session with STARTTLS as the [Policy] asks, and hands the
// resulting connection to a go-smtp [smtp.Client] together with a [Result]
// that says what happened (for logs, Received headers and metrics).
//
// The package knows nothing of Caddy; the delivery workers call [Dial] once
// per attempt.
//
// # Why not go-smtp's own STARTTLS
//
// go-smtp's Client always introduces itself as "localhost" in
// NewClientStartTLS, fails when the server does not offer STARTTLS, and does
// not export its startTLS method. Dial therefore speaks the first part of the
// dialog itself (greeting, EHLO, STARTTLS, TLS handshake) and then gives the
// connection to smtp.NewClient behind a small wrapper that replays the 220
// greeting, so that Client.Hello sends the fresh EHLO that RFC 3207 requires
// after the upgrade.
//
// A consequence is that Client.TLSConnectionState reports false even on a TLS
// session (go-smtp checks for a bare *tls.Conn): use [Conn.TLSConnectionState]
// or [Conn.Result] instead.
//
// # Fallbacks
//
// At the opportunistic level one Dial call tries hard to end with a usable
// session:
//
//   - STARTTLS not offered: continue in plaintext on the same connection.
//   - STARTTLS refused with a 4xx/5xx reply (e.g. 454 4.7.0): the session is
//     still plaintext and usable; continue on the same connection.
//   - The STARTTLS reply was unusable (network error, garbage, or data after
//     the 220 reply) or the TLS handshake failed: the connection is in an
//     unknown state, so close it, connect again and continue in plaintext
//     without trying STARTTLS.
//
// [Result.Fallback] records why a session ended in plaintext. At the levels
// that require TLS (required, verify, mta-sts, dane) each of these is a
// temporary error instead, and so is a certificate that the level rejects:
// the queue defers the message and bounces it only at its maximum age.
//
// # Policies for MX delivery
//
// Besides the levels an operator configures, the package implements the
// standards that let a recipient domain ask for authenticated TLS:
//
//   - MTA-STS (RFC 8461): [MTASTSCache] discovers (TXT _mta-sts.<domain>),
//     fetches ([MTASTSFetcher]) and caches policies ([MTASTSPolicy]);
//   - DANE (RFC 7672): [DANEVerify] matches a chain against TLSA records
//     that the caller looked up with the AD bit (resolver.LookupTLSA);
//   - [SelectPolicy] picks the [Policy] for one MX host: DANE, else an
//     enforced MTA-STS policy, else the configured level;
//   - REQUIRETLS (RFC 8689): [RequireTLSSatisfied] says whether a flagged
//     message may use a session;
//   - TLS-RPT (RFC 8460): [Result.Failure] and [DialError] classify each
//     shortfall with the RFC's result types, [TLSRPTRecorder] adds them up
//     into [TLSRPTReport] values, and [LookupTLSRPT] finds where to send
//     them.
package tlsupgrade
