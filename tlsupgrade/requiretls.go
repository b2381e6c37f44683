package tlsupgrade

import "github.com/emersion/go-smtp"

// The enhanced status codes of RFC 8689 section 4.2.1 for a message flagged
// REQUIRETLS that cannot go on.
var (
	// CodeEncryptionNeeded (5.7.10) means no TLS session with an
	// authenticated server could be established.
	CodeEncryptionNeeded = smtp.EnhancedCode{5, 7, 10}
	// CodeREQUIRETLSNeeded (5.7.30) means the server did not advertise
	// REQUIRETLS after STARTTLS.
	CodeREQUIRETLSNeeded = smtp.EnhancedCode{5, 7, 30}
)

// RequireTLSSatisfied reports whether a message flagged REQUIRETLS (RFC
// 8689) may be sent on a session: nil when it may, else a permanent
// *smtp.SMTPError (550) for the non-delivery report. RFC 8689 section 4.2.1
// asks, in this order:
//
//  1. mxAuthenticatedOrSTS: the MX lookup was DNSSEC-validated (the AD bit
//     of resolver.MXHosts), or the MX host matches the recipient domain's
//     MTA-STS policy (MTASTSPolicy.Matches, mode enforce or testing);
//     otherwise 5.7.10;
//  2. the session is TLS; otherwise 5.7.10;
//  3. the server was authenticated for the MX host name: PKIX
//     (res.Verified; the name checked is Options.ServerName, which must be
//     the MX host name, or the domain for an implicit MX) or DANE
//     (res.DANEVerified); otherwise 5.7.10;
//  4. the EHLO over TLS advertised REQUIRETLS; otherwise 5.7.30.
//
// A local verify level alone does not make a path acceptable: step 1 still
// needs DNSSEC or MTA-STS. On an error the caller must QUIT (it may first
// send other messages that do not require TLS) and try the next MX host; when
// none is left the message bounces with the error of the last host (RFC 8689
// section 4.2.1).
func RequireTLSSatisfied(res Result, mxAuthenticatedOrSTS bool, serverAdvertisesREQUIRETLS bool) error {
	switch {
	case !mxAuthenticatedOrSTS:
		return requireTLSError(CodeEncryptionNeeded,
			"REQUIRETLS: the MX host is neither DNSSEC-authenticated nor listed in an MTA-STS policy")
	case !res.TLS:
		return requireTLSError(CodeEncryptionNeeded, "REQUIRETLS: no TLS session with the server")
	case !res.Verified && !res.DANEVerified:
		msg := "REQUIRETLS: the server certificate was not authenticated"
		if res.VerifyError != "" {
			msg += " (" + res.VerifyError + ")"
		}
		return requireTLSError(CodeEncryptionNeeded, msg)
	case !serverAdvertisesREQUIRETLS:
		return requireTLSError(CodeREQUIRETLSNeeded, "REQUIRETLS support required, but the server does not offer it")
	}
	return nil
}

func requireTLSError(code smtp.EnhancedCode, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 550, EnhancedCode: code, Message: msg}
}

// CheckRequireTLS is [RequireTLSSatisfied] for this session: the server's
// REQUIRETLS comes from the EHLO reply the Client holds (over TLS when there
// is TLS).
func (c *Conn) CheckRequireTLS(mxAuthenticatedOrSTS bool) error {
	ok, _ := c.Client.Extension("REQUIRETLS")
	return RequireTLSSatisfied(c.Result, mxAuthenticatedOrSTS, ok)
}
