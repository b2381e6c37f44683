package tlsupgrade

import (
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestRequireTLSSatisfied(t *testing.T) {
	verified := Result{Level: LevelVerify, TLS: true, Verified: true}
	dane := Result{Level: LevelDANE, TLS: true, DANEVerified: true, VerifyError: "x509: certificate signed by unknown authority"}
	unverified := Result{Level: LevelOpportunistic, TLS: true, VerifyError: "x509: certificate is valid for other.test, not mx.test"}
	plaintext := Result{Level: LevelOpportunistic, Fallback: fallbackNotOffered}
	for _, tc := range []struct {
		name       string
		res        Result
		mxAuth     bool
		advertised bool
		code       smtp.EnhancedCode // zero: satisfied
		text       string
	}{
		{"PKIX, DNSSEC MX", verified, true, true, smtp.EnhancedCode{}, ""},
		{"DANE", dane, true, true, smtp.EnhancedCode{}, ""},
		{"verify alone is not enough", verified, false, true, CodeEncryptionNeeded, "neither DNSSEC"},
		{"plaintext", plaintext, true, true, CodeEncryptionNeeded, "no TLS"},
		{"certificate not verified", unverified, true, true, CodeEncryptionNeeded, "valid for other.test"},
		{"no REQUIRETLS", verified, true, false, CodeREQUIRETLSNeeded, "REQUIRETLS support required"},
		{"DANE, no REQUIRETLS", dane, true, false, CodeREQUIRETLSNeeded, ""},
		{"unauthenticated MX first", plaintext, false, false, CodeEncryptionNeeded, "MX"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := RequireTLSSatisfied(tc.res, tc.mxAuth, tc.advertised)
			if tc.code == (smtp.EnhancedCode{}) {
				if err != nil {
					t.Errorf("err = %v", err)
				}
				return
			}
			se, ok := errors.AsType[*smtp.SMTPError](err)
			if !ok || se.Code != 550 || se.EnhancedCode != tc.code || !strings.Contains(se.Message, tc.text) {
				t.Errorf("err = %#v, want 550 %v containing %q", err, tc.code, tc.text)
			}
			if IsTemporary(err) {
				t.Error("a REQUIRETLS failure is temporary")
			}
		})
	}
}

// TestRequireTLSSessions asks real receivers: a verified one that offers
// REQUIRETLS, one that does not, and an opportunistic-only one (no
// STARTTLS), where a REQUIRETLS message must bounce.
func TestRequireTLSSessions(t *testing.T) {
	ca := newTestCA(t)
	enable := func(s *smtp.Server) { s.EnableREQUIRETLS = true }
	for _, tc := range []struct {
		name   string
		tls    bool
		enable bool
		level  Level
		code   smtp.EnhancedCode
	}{
		{"verified, REQUIRETLS", true, true, LevelVerify, smtp.EnhancedCode{}},
		{"verified, no REQUIRETLS", true, false, LevelVerify, CodeREQUIRETLSNeeded},
		{"opportunistic-only destination", false, true, LevelOpportunistic, CodeEncryptionNeeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			var configure []func(*smtp.Server)
			if tc.enable {
				configure = append(configure, enable)
			}
			cfg := serverTLS(ca.valid(t, "a.mx.test"))
			if !tc.tls {
				cfg = nil
			}
			ts := startServer(t, cfg, false, configure...)
			c, err := Dial(testContext(t), "a.mx.test:25", Options{
				LocalName: localName, Policy: Policy{Level: tc.level}, RootCAs: ca.pool, DialContext: dialTo(ts.addr),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.CheckRequireTLS(true)
			if tc.code == (smtp.EnhancedCode{}) {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				// go-smtp's client sends REQUIRETLS with MAIL.
				if err := c.Client.Mail("sender@src.test", &smtp.MailOptions{RequireTLS: true}); err != nil {
					t.Errorf("MAIL REQUIRETLS: %v", err)
				}
				return
			}
			if se, ok := errors.AsType[*smtp.SMTPError](err); !ok || se.EnhancedCode != tc.code {
				t.Errorf("err = %v, want %v", err, tc.code)
			}
		})
	}
}
