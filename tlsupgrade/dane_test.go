package tlsupgrade

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/resolver"
)

func sha256Of(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
func sha512Of(b []byte) []byte { s := sha512.Sum512(b); return s[:] }

// withCA appends the CA certificate to a server certificate's chain, as a
// server using DANE-TA must present it.
func withCA(cert tls.Certificate, ca *testCA) tls.Certificate {
	cert.Certificate = append(cert.Certificate, ca.cert.Raw)
	return cert
}

// chainOf parses the chain of a tls.Certificate.
func chainOf(t testing.TB, cert tls.Certificate) []*x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	return chain
}

// cnOnly issues a certificate for cn without subjectAltNames.
func cnOnly(t testing.TB, ca *testCA, cn string) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestDANEVerify(t *testing.T) {
	ca := newTestCA(t)
	otherCA := newTestCA(t)
	now := time.Now()
	var noCA *testCA

	good := chainOf(t, withCA(ca.valid(t, "a.mx.test"), ca))
	leaf := good[0]
	wildcard := chainOf(t, withCA(ca.valid(t, "*.mx.test"), ca))
	expired := chainOf(t, withCA(ca.issue(t, []string{"a.mx.test"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour)), ca))
	selfSigned := chainOf(t, noCA.issue(t, []string{"whatever.test"}, now.Add(-48*time.Hour), now.Add(-24*time.Hour)))
	cn := chainOf(t, withCA(cnOnly(t, ca, "a.mx.test"), ca))
	otherKey := chainOf(t, ca.valid(t, "a.mx.test"))[0]

	eeSPKI256 := resolver.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: sha256Of(leaf.RawSubjectPublicKeyInfo)}
	taCert256 := resolver.TLSA{Usage: 2, Selector: 0, MatchingType: 1, Data: sha256Of(ca.cert.Raw)}
	taSPKI512 := resolver.TLSA{Usage: 2, Selector: 1, MatchingType: 2, Data: sha512Of(ca.cert.RawSubjectPublicKeyInfo)}
	otherTA := resolver.TLSA{Usage: 2, Selector: 0, MatchingType: 1, Data: sha256Of(otherCA.cert.Raw)}

	for _, tc := range []struct {
		name   string
		chain  []*x509.Certificate
		recs   []resolver.TLSA
		names  []string
		result string // "" ok, "unusable" ErrNoUsableTLSA, else the PolicyError's result type
	}{
		{"EE SPKI SHA-256", good, []resolver.TLSA{eeSPKI256}, []string{"a.mx.test"}, ""},
		{"EE full certificate", good, []resolver.TLSA{{Usage: 3, Selector: 0, MatchingType: 0, Data: leaf.Raw}}, nil, ""},
		{"EE certificate SHA-512", good, []resolver.TLSA{{Usage: 3, Selector: 0, MatchingType: 2, Data: sha512Of(leaf.Raw)}}, nil, ""},
		{"EE SPKI full", good, []resolver.TLSA{{Usage: 3, Selector: 1, MatchingType: 0, Data: leaf.RawSubjectPublicKeyInfo}}, nil, ""},
		{"EE ignores names and dates", selfSigned,
			[]resolver.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: sha256Of(selfSigned[0].RawSubjectPublicKeyInfo)}},
			[]string{"a.mx.test"}, ""},
		{"EE mismatch", good, []resolver.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: sha256Of(otherKey.RawSubjectPublicKeyInfo)}},
			[]string{"a.mx.test"}, ResultTLSAInvalid},
		{"EE full certificate mismatch", good, []resolver.TLSA{{Usage: 3, Selector: 0, MatchingType: 0, Data: otherKey.Raw}}, nil, ResultTLSAInvalid},
		{"EE among others", good, []resolver.TLSA{otherTA, {Usage: 1, Selector: 1, MatchingType: 1, Data: eeSPKI256.Data}, eeSPKI256}, nil, ""},

		{"TA certificate", good, []resolver.TLSA{taCert256}, []string{"a.mx.test"}, ""},
		{"TA SPKI SHA-512", good, []resolver.TLSA{taSPKI512}, []string{"a.mx.test"}, ""},
		{"TA wildcard", wildcard, []resolver.TLSA{taCert256}, []string{"a.mx.test"}, ""},
		{"TA second name", good, []resolver.TLSA{taCert256}, []string{"mx.cname.test", "a.mx.test"}, ""},
		{"TA common name", cn, []resolver.TLSA{taCert256}, []string{"a.mx.test"}, ""},
		{"TA wrong name", good, []resolver.TLSA{taCert256}, []string{"b.other.test"}, ResultCertificateHostMismatch},
		{"TA wildcard one label only", wildcard, []resolver.TLSA{taCert256}, []string{"x.a.mx.test"}, ResultCertificateHostMismatch},
		{"TA no name", good, []resolver.TLSA{taCert256}, nil, ResultCertificateHostMismatch},
		{"TA expired", expired, []resolver.TLSA{taCert256}, []string{"a.mx.test"}, ResultCertificateExpired},
		{"TA not in chain", good[:1], []resolver.TLSA{taCert256}, []string{"a.mx.test"}, ResultTLSAInvalid},
		{"TA of another CA", good, []resolver.TLSA{otherTA}, []string{"a.mx.test"}, ResultTLSAInvalid},

		{"PKIX usages unusable", good, []resolver.TLSA{{Usage: 0, Selector: 0, MatchingType: 1, Data: sha256Of(ca.cert.Raw)},
			{Usage: 1, Selector: 1, MatchingType: 1, Data: eeSPKI256.Data}}, nil, "unusable"},
		{"unknown selector and matching type", good, []resolver.TLSA{{Usage: 3, Selector: 2, MatchingType: 1, Data: eeSPKI256.Data},
			{Usage: 3, Selector: 1, MatchingType: 3, Data: eeSPKI256.Data}}, nil, "unusable"},
		{"digest of the wrong length", good, []resolver.TLSA{{Usage: 3, Selector: 1, MatchingType: 2, Data: eeSPKI256.Data}}, nil, "unusable"},
		{"no records", good, nil, nil, "unusable"},
		{"SHA-512 outranks SHA-256", good, []resolver.TLSA{eeSPKI256,
			{Usage: 3, Selector: 1, MatchingType: 2, Data: sha512Of(otherKey.RawSubjectPublicKeyInfo)}}, nil, ResultTLSAInvalid},
		{"no certificate", nil, []resolver.TLSA{eeSPKI256}, nil, ResultTLSAInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := DANEVerify(tc.chain, tc.recs, tc.names...)
			switch tc.result {
			case "":
				if err != nil {
					t.Errorf("err = %v", err)
				}
			case "unusable":
				if !errors.Is(err, ErrNoUsableTLSA) {
					t.Errorf("err = %v, want ErrNoUsableTLSA", err)
				}
			default:
				if pe, ok := errors.AsType[*PolicyError](err); !ok || pe.ResultType != tc.result {
					t.Errorf("err = %v, want a %s PolicyError", err, tc.result)
				}
			}
		})
	}
}

// TestDialDANE resolves an MX and its TLSA records on a loopback DNS server,
// picks the policy with SelectPolicy and delivers.
func TestDialDANE(t *testing.T) {
	ca := newTestCA(t)
	var noCA *testCA
	now := time.Now()
	selfSigned := noCA.issue(t, []string{"a.mx.test"}, now.Add(-time.Hour), now.Add(time.Hour))
	spki := leafOf(t, selfSigned).RawSubjectPublicKeyInfo
	wrongKey := leafOf(t, ca.valid(t, "a.mx.test")).RawSubjectPublicKeyInfo
	caIssued := withCA(ca.valid(t, "a.mx.test"), ca)

	type tlsa struct {
		usage, selector, matching uint8
		data                      []byte
	}
	for _, tc := range []struct {
		name    string
		cert    tls.Certificate
		strip   bool
		tlsa    []tlsa
		mxAD    bool
		tlsaAD  bool
		policy  string // Result.Policy
		dane    bool   // Result.DANEVerified
		stage   string // "" delivered over TLS
		failure string
	}{
		{name: "EE match", cert: selfSigned, tlsa: []tlsa{{3, 1, 1, sha256Of(spki)}}, mxAD: true, tlsaAD: true,
			policy: "dane", dane: true},
		{name: "EE full certificate", cert: selfSigned, tlsa: []tlsa{{3, 0, 0, selfSigned.Certificate[0]}}, mxAD: true, tlsaAD: true,
			policy: "dane", dane: true},
		{name: "TA", cert: caIssued, tlsa: []tlsa{{2, 0, 1, sha256Of(ca.cert.Raw)}}, mxAD: true, tlsaAD: true,
			policy: "dane", dane: true},
		{name: "EE mismatch", cert: selfSigned, tlsa: []tlsa{{3, 1, 1, sha256Of(wrongKey)}}, mxAD: true, tlsaAD: true,
			policy: "dane", stage: StageHandshake, failure: ResultTLSAInvalid},
		{name: "STARTTLS stripped", cert: selfSigned, strip: true, tlsa: []tlsa{{3, 1, 1, sha256Of(spki)}}, mxAD: true, tlsaAD: true,
			policy: "dane", stage: StageSTARTTLS, failure: ResultSTARTTLSNotSupported},
		{name: "only unusable records", cert: selfSigned, tlsa: []tlsa{{1, 1, 1, sha256Of(wrongKey)}}, mxAD: true, tlsaAD: true,
			policy: "dane"},
		{name: "only unusable records, STARTTLS stripped", cert: selfSigned, strip: true, tlsa: []tlsa{{1, 1, 1, sha256Of(wrongKey)}},
			mxAD: true, tlsaAD: true, policy: "dane", stage: StageSTARTTLS, failure: ResultSTARTTLSNotSupported},
		// Without the AD bit the (wrong) records are not used at all.
		{name: "TLSA without AD", cert: selfSigned, tlsa: []tlsa{{3, 1, 1, sha256Of(wrongKey)}}, mxAD: true,
			policy: "opportunistic"},
		{name: "MX without AD", cert: selfSigned, tlsa: []tlsa{{3, 1, 1, sha256Of(wrongKey)}}, tlsaAD: true,
			policy: "opportunistic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			dns, res := newDNS(t)
			dns.AddMX("example.test", 10, "a.mx.test")
			dns.AddA("a.mx.test", "127.0.0.1")
			dns.SetAuthenticated("example.test", tc.mxAD)
			for _, r := range tc.tlsa {
				dns.AddTLSA("_25._tcp.a.mx.test", r.usage, r.selector, r.matching, r.data)
			}
			dns.SetAuthenticated("_25._tcp.a.mx.test", tc.tlsaAD)

			ts := startServer(t, serverTLS(tc.cert), false)
			addr := ts.addr
			if tc.strip {
				addr = startStripper(t, ts.addr)
			}

			ctx := testContext(t)
			hosts, mxAD, err := res.MXHosts(ctx, "example.test")
			if err != nil || len(hosts) != 1 {
				t.Fatalf("MXHosts = %v, %v", hosts, err)
			}
			recs, tlsaAD, err := res.LookupTLSA(ctx, "_25._tcp."+hosts[0].Host)
			if err != nil {
				t.Fatal(err)
			}
			policy, err := SelectPolicy(hosts[0].Host, Destination{MXAuthenticated: mxAD, TLSA: recs, TLSAAuthenticated: tlsaAD})
			if err != nil {
				t.Fatal(err)
			}
			c, err := Dial(ctx, hosts[0].Host+":25", Options{LocalName: localName, Policy: policy, DialContext: dialTo(addr)})
			if tc.stage != "" {
				de := dialError(t, err, tc.stage)
				if r := de.Result; !de.Temporary || r.Policy != tc.policy || r.Failure != tc.failure || r.TLS {
					t.Errorf("err = %v, Result = %+v", err, r)
				}
				ts.wantNothing(t, 1)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := c.Result
			if !r.TLS || r.Policy != tc.policy || r.DANEVerified != tc.dane || r.Failure != "" || r.Verified {
				t.Errorf("Result = %+v", r)
			}
			if cs, _ := c.TLSConnectionState(); cs.ServerName != "a.mx.test" {
				t.Errorf("SNI %q, want the MX host name", cs.ServerName)
			}
			deliver(t, c)
			ts.wantDelivered(t, true, 1)
		})
	}
}
