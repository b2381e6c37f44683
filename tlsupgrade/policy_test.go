package tlsupgrade

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/resolver"
)

// receivers are the go-smtp servers the policy tests deliver to, all for the
// MX host "a.mx.test".
type receiverKind int

const (
	goodCert       receiverKind = iota // valid for a.mx.test, from the test CA
	wrongNameCert                      // valid for other.test, from the test CA
	selfSignedCert                     // for a.mx.test, signed by itself
	expiredCert                        // for a.mx.test, from the test CA, expired
	strippedTLS                        // goodCert behind a STARTTLS stripper
)

func (k receiverKind) String() string {
	return [...]string{"good", "wrong name", "self-signed", "expired", "STARTTLS stripped"}[k]
}

// startReceiver starts a receiver of kind k and returns it with the address
// to dial (the stripper's for strippedTLS).
func startReceiver(t *testing.T, ca *testCA, k receiverKind) (*testServer, string) {
	t.Helper()
	now := time.Now()
	var noCA *testCA
	cert := ca.valid(t, "a.mx.test")
	switch k {
	case wrongNameCert:
		cert = ca.valid(t, "other.test")
	case selfSignedCert:
		cert = noCA.issue(t, []string{"a.mx.test"}, now.Add(-time.Hour), now.Add(time.Hour))
	case expiredCert:
		cert = ca.issue(t, []string{"a.mx.test"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	}
	ts := startServer(t, serverTLS(cert), false)
	if k == strippedTLS {
		return ts, startStripper(t, ts.addr)
	}
	return ts, ts.addr
}

// TestEnforcingLevels: verify and mta-sts (enforce) deliver only over TLS
// with a certificate that verifies for the MX name; every other receiver
// gets an error at the handshake or at STARTTLS, on one connection, without
// a message, with the failure classified for TLS-RPT.
func TestEnforcingLevels(t *testing.T) {
	ca := newTestCA(t)
	sts := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSEnforce, MX: []string{"*.mx.test"}, MaxAge: time.Hour}
	for _, policy := range []Policy{
		{Level: LevelVerify},
		{Level: LevelMTASTS, MTASTS: sts},
	} {
		for _, tc := range []struct {
			kind    receiverKind
			stage   string
			failure string
		}{
			{goodCert, "", ""},
			{wrongNameCert, StageHandshake, ResultCertificateHostMismatch},
			{selfSignedCert, StageHandshake, ResultCertificateNotTrusted},
			{expiredCert, StageHandshake, ResultCertificateExpired},
			{strippedTLS, StageSTARTTLS, ResultSTARTTLSNotSupported},
		} {
			t.Run(string(policy.Level)+"/"+tc.kind.String(), func(t *testing.T) {
				checkLeaks(t)
				ts, addr := startReceiver(t, ca, tc.kind)
				c, err := Dial(testContext(t), "a.mx.test:25", Options{
					LocalName: localName, Policy: policy, RootCAs: ca.pool, DialContext: dialTo(addr),
				})
				if tc.stage == "" {
					if err != nil {
						t.Fatal(err)
					}
					r := c.Result
					if !r.TLS || !r.Verified || r.Policy != string(policy.Level) || r.Failure != "" || r.Fallback != "" {
						t.Errorf("Result = %+v", r)
					}
					deliver(t, c)
					ts.wantDelivered(t, true, 1)
					return
				}
				de := dialError(t, err, tc.stage)
				if !de.Temporary || de.Fallback != "" {
					t.Errorf("err = %v: temporary %v, fallback %q", err, de.Temporary, de.Fallback)
				}
				if r := de.Result; r.Failure != tc.failure || r.Policy != string(policy.Level) || r.TLS {
					t.Errorf("Result = %+v, want failure %s", r, tc.failure)
				}
				t.Logf("err: %v", err)
				ts.wantNothing(t, 1) // no plaintext retry
			})
		}
	}
}

// TestMTASTSNotListed: enforce mode does not even connect to an MX host its
// policy does not list.
func TestMTASTSNotListed(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	ts, addr := startReceiver(t, ca, goodCert)
	sts := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSEnforce, MX: []string{"mail.example.test"}, MaxAge: time.Hour}
	_, err := Dial(testContext(t), "a.mx.test:25", Options{
		LocalName: localName, Policy: Policy{Level: LevelMTASTS, MTASTS: sts}, RootCAs: ca.pool, DialContext: dialTo(addr),
	})
	de := dialError(t, err, StagePolicy)
	if !de.Temporary || !errors.Is(err, ErrMXNotInPolicy) || de.Result.Failure != ResultValidationFailure {
		t.Errorf("err = %v, Result %+v", err, de.Result)
	}
	ts.wantNothing(t, 0)
}

// TestMTASTSTesting: in testing mode the message is delivered as the
// configured level allows, and Result.Failure is the report.
func TestMTASTSTesting(t *testing.T) {
	ca := newTestCA(t)
	sts := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSTesting, MX: []string{"*.mx.test"}, MaxAge: time.Hour}
	for _, tc := range []struct {
		kind    receiverKind
		host    string
		overTLS bool
		failure string
	}{
		{goodCert, "a.mx.test", true, ""},
		{goodCert, "mx.elsewhere.test", true, ResultValidationFailure}, // not listed; its name is not on the certificate either
		{wrongNameCert, "a.mx.test", true, ResultCertificateHostMismatch},
		{selfSignedCert, "a.mx.test", true, ResultCertificateNotTrusted},
		{strippedTLS, "a.mx.test", false, ResultSTARTTLSNotSupported},
	} {
		t.Run(tc.kind.String()+"/"+tc.host, func(t *testing.T) {
			checkLeaks(t)
			ts, addr := startReceiver(t, ca, tc.kind)
			policy, err := SelectPolicy(tc.host, Destination{MTASTS: sts})
			if err != nil {
				t.Fatal(err)
			}
			c, err := Dial(testContext(t), tc.host+":25", Options{
				LocalName: localName, Policy: policy, RootCAs: ca.pool, DialContext: dialTo(addr),
			})
			if err != nil {
				t.Fatal(err)
			}
			r := c.Result
			if r.Level != LevelOpportunistic || r.Policy != "mta-sts" || r.PolicyType() != PolicyTypeSTS || r.Failure != tc.failure {
				t.Errorf("Result = %+v, want failure %q", r, tc.failure)
			}
			if tc.failure != "" && r.FailureReason == "" {
				t.Error("no FailureReason")
			}
			deliver(t, c)
			ts.wantDelivered(t, tc.overTLS, 1)
		})
	}
}

// TestVerifyIPWithoutName: a verify dial to an address without a server
// name cannot succeed.
func TestVerifyIPWithoutName(t *testing.T) {
	checkLeaks(t)
	ca := newTestCA(t)
	ts, addr := startReceiver(t, ca, goodCert)
	_, err := Dial(testContext(t), addr, Options{LocalName: localName, Policy: Policy{Level: LevelVerify}, RootCAs: ca.pool})
	de := dialError(t, err, StageHandshake)
	if de.Result.Failure != ResultCertificateHostMismatch {
		t.Errorf("Result = %+v", de.Result)
	}
	ts.wantNothing(t, 1)
}

func TestSelectPolicy(t *testing.T) {
	tlsa := []resolver.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)}}
	enforce := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSEnforce, MX: []string{"*.mx.test"}}
	testing_ := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSTesting, MX: []string{"*.mx.test"}}
	none := &MTASTSPolicy{Version: "STSv1", Mode: MTASTSNone}
	for _, tc := range []struct {
		name string
		host string
		d    Destination
		want Policy
		err  error
	}{
		{"nothing", "a.mx.test", Destination{}, Policy{}, nil},
		{"configured", "a.mx.test", Destination{Configured: LevelVerify}, Policy{Level: LevelVerify}, nil},
		{"dane", "a.mx.test", Destination{MXAuthenticated: true, TLSA: tlsa, TLSAAuthenticated: true},
			Policy{Level: LevelDANE, TLSA: tlsa}, nil},
		{"dane over mta-sts and configured", "a.mx.test",
			Destination{Configured: LevelNone, MXAuthenticated: true, TLSA: tlsa, TLSAAuthenticated: true, MTASTS: enforce},
			Policy{Level: LevelDANE, TLSA: tlsa}, nil},
		{"TLSA without AD", "a.mx.test", Destination{MXAuthenticated: true, TLSA: tlsa}, Policy{}, nil},
		{"MX without AD", "a.mx.test", Destination{TLSA: tlsa, TLSAAuthenticated: true}, Policy{}, nil},
		{"TLSA without AD, mta-sts", "a.mx.test", Destination{MXAuthenticated: true, TLSA: tlsa, MTASTS: enforce},
			Policy{Level: LevelMTASTS, MTASTS: enforce}, nil},
		{"dane required", "a.mx.test", Destination{Configured: LevelDANE, TLSA: tlsa}, Policy{}, ErrDANERequired},
		{"mta-sts over configured", "a.mx.test", Destination{Configured: LevelRequired, MTASTS: enforce},
			Policy{Level: LevelMTASTS, MTASTS: enforce}, nil},
		{"mta-sts not listed", "mx.other.test", Destination{MTASTS: enforce}, Policy{}, ErrMXNotInPolicy},
		{"testing keeps the configured level", "mx.other.test", Destination{Configured: LevelRequired, MTASTS: testing_},
			Policy{Level: LevelRequired, MTASTS: testing_}, nil},
		{"mode none ignored", "mx.other.test", Destination{Configured: LevelVerify, MTASTS: none}, Policy{Level: LevelVerify}, nil},
		{"mta-sts required, testing enforced", "a.mx.test", Destination{Configured: LevelMTASTS, MTASTS: testing_},
			Policy{Level: LevelMTASTS, MTASTS: testing_}, nil},
		{"mta-sts required, not listed", "mx.other.test", Destination{Configured: LevelMTASTS, MTASTS: testing_}, Policy{}, ErrMXNotInPolicy},
		{"mta-sts required, none", "a.mx.test", Destination{Configured: LevelMTASTS, MTASTS: none}, Policy{}, ErrMTASTSRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SelectPolicy(tc.host, tc.d)
			if tc.err != nil {
				pe, ok := errors.AsType[*PolicyError](err)
				if !errors.Is(err, tc.err) || !ok || pe.ResultType == "" {
					t.Fatalf("got %+v, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("the selected policy is not valid: %v", err)
			}
		})
	}
}

func TestLevelValidate(t *testing.T) {
	for _, l := range []Level{"", LevelNone, LevelOpportunistic, LevelRequired, LevelVerify, LevelMTASTS, LevelDANE} {
		if err := l.Validate(); err != nil {
			t.Errorf("%q: %v", l, err)
		}
	}
	if err := Level("secure").Validate(); err == nil || !strings.Contains(err.Error(), `"secure"`) {
		t.Errorf("err = %v", err)
	}
}
