package ldap

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// newCheck provisions a check against s (bound as the gateway account,
// searching the people) with changes applied; it is cleaned up when the
// test ends.
func (s *slapd) newCheck(t *testing.T, changes ...func(*LDAP)) *LDAP {
	t.Helper()
	l := &LDAP{URL: s.ldapURL, BaseDN: "ou=people," + testSuffix, BindDN: testBindDN, BindPassword: testPassword}
	for _, c := range changes {
		c(l)
	}
	if err := provision(t, l); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return l
}

// provision provisions l as Caddy would, cleaning it up when the test ends.
func provision(t *testing.T, l *LDAP) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := l.Provision(ctx); err != nil {
		return err
	}
	t.Cleanup(func() { _ = l.Cleanup() })
	return nil
}

// ask runs the check for one recipient.
func ask(l *LDAP, rcpt string) smtpapp.Verdict {
	return l.CheckRecipient(context.Background(), &smtpapp.CheckInput{Recipient: rcpt})
}

// wantVerdict fails unless v has the result and, for refusals, the reply
// code and enhanced code given as "550 5.1.1".
func wantVerdict(t *testing.T, what string, v smtpapp.Verdict, result, reply string) {
	t.Helper()
	got := v.Result
	if v.Reply != nil {
		e := v.Reply.EnhancedCode
		got += fmt.Sprintf(" %d %d.%d.%d", v.Reply.Code, e[0], e[1], e[2])
	}
	want := strings.TrimSpace(result + " " + reply)
	if got != want {
		t.Errorf("%s: verdict %q (reason %q), want %q", what, got, v.Reason, want)
	}
}

// TestLookup: a recipient with an entry is accepted (any case, with a
// +detail); one without gets 550 5.1.1, whose text says nothing of the
// directory.
func TestLookup(t *testing.T) {
	s := startSlapd(t)
	l := s.newCheck(t)
	wantVerdict(t, "alice", ask(l, "alice@example.test"), smtpapp.VerdictAccept, "")
	wantVerdict(t, "ALICE+news", ask(l, "ALICE+news@Example.Test."), smtpapp.VerdictAccept, "")
	wantVerdict(t, "bob", ask(l, "bob@example.test"), smtpapp.VerdictAccept, "")
	v := ask(l, "nobody@example.test")
	wantVerdict(t, "nobody", v, smtpapp.VerdictReject, "550 5.1.1")
	if v.Reply != nil && v.Reply.Message != "User unknown" {
		t.Errorf("reply text %q, want %q", v.Reply.Message, "User unknown")
	}
	// A filter on the local part and the domain, one level below the base.
	l = s.newCheck(t, func(l *LDAP) {
		l.Filter, l.Scope = "(&(objectClass=inetOrgPerson)(uid={local})(mail=*@{domain}))", "one"
	})
	wantVerdict(t, "uid bob", ask(l, "bob@example.test"), smtpapp.VerdictAccept, "")
	wantVerdict(t, "uid bob, other domain", ask(l, "bob@other.test"), smtpapp.VerdictReject, "550 5.1.1")
	// A filter that matches several entries (more than the search asks
	// for): the recipient exists all the same.
	l = s.newCheck(t, func(l *LDAP) { l.Filter = "(&(objectClass=inetOrgPerson)(mail=*@{domain}))" })
	wantVerdict(t, "two entries", ask(l, "anyone@example.test"), smtpapp.VerdictAccept, "")
	// Scope base: only the base entry itself is searched.
	l = s.newCheck(t, func(l *LDAP) { l.Scope = "base" })
	wantVerdict(t, "alice, scope base", ask(l, "alice@example.test"), smtpapp.VerdictReject, "550 5.1.1")
}

// TestFilterInjection: filter syntax in a recipient is escaped, so it
// matches nobody instead of everybody.
func TestFilterInjection(t *testing.T) {
	s := startSlapd(t)
	l := s.newCheck(t, func(l *LDAP) { l.Filter = "(&(objectClass=inetOrgPerson)(uid={local}))" })
	for _, rcpt := range []string{"*@example.test", "*)(uid=*@example.test", "alice)(|(uid=*@example.test", `\2a@example.test`} {
		wantVerdict(t, rcpt, ask(l, rcpt), smtpapp.VerdictReject, "550 5.1.1")
	}
	l = s.newCheck(t) // (mail={address})
	wantVerdict(t, "* as the address", ask(l, "*@*"), smtpapp.VerdictReject, "550 5.1.1")
}

// TestBindRefused: a wrong bind password makes the directory unusable:
// 451 4.4.3, and the password is not in the reason that is logged.
func TestBindRefused(t *testing.T) {
	s := startSlapd(t)
	l := s.newCheck(t, func(l *LDAP) { l.BindPassword = "wrong-password" })
	v := ask(l, "alice@example.test")
	wantVerdict(t, "wrong password", v, smtpapp.VerdictTempfail, "451 4.4.3")
	if !strings.Contains(v.Reason, "Invalid Credentials") || strings.Contains(v.Reason, "wrong-password") {
		t.Errorf("reason %q: want the bind's result, without the password", v.Reason)
	}
}

// TestTLS: ldaps:// and StartTLS work with the test CA trusted (slapd logs
// the TLS sessions), and fail (451 4.4.3) with a certificate the check
// does not trust or one for another name.
func TestTLS(t *testing.T) {
	s := startSlapd(t)
	other := testutil.NewCA(t).PEMFile(t)
	for _, tc := range []struct {
		name   string
		change func(*LDAP)
		ok     bool
	}{
		{"ldaps, test CA", func(l *LDAP) { l.URL, l.CA = s.ldapsURL, []string{s.caFile} }, true},
		{"starttls, test CA", func(l *LDAP) { l.StartTLS, l.CA = true, []string{s.caFile} }, true},
		{"ldaps, server_name", func(l *LDAP) {
			l.URL, l.CA, l.ServerName = s.ldapsURL, []string{s.caFile}, "ldap.example.test"
		}, true},
		{"ldaps, untrusted", func(l *LDAP) { l.URL, l.CA = s.ldapsURL, []string{other} }, false},
		{"starttls, untrusted", func(l *LDAP) { l.StartTLS, l.CA = true, []string{other} }, false},
		{"ldaps, system roots", func(l *LDAP) { l.URL = s.ldapsURL }, false},
		{"ldaps, other name", func(l *LDAP) { l.URL, l.CA, l.ServerName = s.ldapsURL, []string{s.caFile}, "wrong.example.test" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.logCount("TLS established")
			v := ask(s.newCheck(t, tc.change), "alice@example.test")
			if !tc.ok {
				wantVerdict(t, tc.name, v, smtpapp.VerdictTempfail, "451 4.4.3")
				if !strings.Contains(v.Reason, "certificate") {
					t.Errorf("reason %q does not say what was wrong with the certificate", v.Reason)
				}
				return
			}
			wantVerdict(t, tc.name, v, smtpapp.VerdictAccept, "")
			if s.logCount("TLS established") == before {
				t.Error("slapd logged no TLS session")
			}
		})
	}
}

// TestLDAPI: the check talks to slapd over its Unix socket.
func TestLDAPI(t *testing.T) {
	s := startSlapd(t)
	l := s.newCheck(t, func(l *LDAP) { l.URL = s.ldapiURL })
	wantVerdict(t, "alice over ldapi", ask(l, "alice@example.test"), smtpapp.VerdictAccept, "")
	wantVerdict(t, "nobody over ldapi", ask(l, "nobody@example.test"), smtpapp.VerdictReject, "550 5.1.1")
}

// TestCacheAndUnreachable: answers are cached, positive and negative (no
// second search reaches slapd); with slapd stopped, cached answers stay
// and a new recipient gets 451 4.4.3, or is accepted with on_unreachable
// accept.
func TestCacheAndUnreachable(t *testing.T) {
	s := startSlapd(t)
	l := s.newCheck(t)
	accepting := s.newCheck(t, func(l *LDAP) { l.OnUnreachable = onUnreachableAccept })
	wantVerdict(t, "alice", ask(l, "alice@example.test"), smtpapp.VerdictAccept, "")
	wantVerdict(t, "nobody", ask(l, "nobody@example.test"), smtpapp.VerdictReject, "550 5.1.1")
	if n := s.searches(); n != 2 {
		t.Fatalf("slapd logged %d searches, want 2", n)
	}
	wantVerdict(t, "alice again", ask(l, "Alice@example.test"), smtpapp.VerdictAccept, "")
	wantVerdict(t, "nobody again", ask(l, "nobody@example.test"), smtpapp.VerdictReject, "550 5.1.1")
	if n := s.searches(); n != 2 {
		t.Errorf("slapd logged %d searches after cached answers, want still 2", n)
	}

	s.stop()
	wantVerdict(t, "alice, slapd stopped", ask(l, "alice@example.test"), smtpapp.VerdictAccept, "")
	wantVerdict(t, "nobody, slapd stopped", ask(l, "nobody@example.test"), smtpapp.VerdictReject, "550 5.1.1")
	wantVerdict(t, "bob, slapd stopped", ask(l, "bob@example.test"), smtpapp.VerdictTempfail, "451 4.4.3")
	wantVerdict(t, "bob, slapd stopped, accept mode", ask(accepting, "bob@example.test"), smtpapp.VerdictAccept, "")
	wantVerdict(t, "nobody, slapd stopped, accept mode", ask(accepting, "nobody@example.test"), smtpapp.VerdictAccept, "")
}

// TestPoolReusesAndReconnects: lookups one after another share one bound
// connection; when slapd restarts, the dead connection is replaced
// without a tempfail.
func TestPoolReusesAndReconnects(t *testing.T) {
	s := startSlapd(t)
	l := s.newCheck(t)
	for i := range 5 {
		wantVerdict(t, "lookup", ask(l, fmt.Sprintf("user%d@example.test", i)), smtpapp.VerdictReject, "550 5.1.1")
	}
	// Each connection binds once (the probes for readiness never do).
	if n := s.logCount(` op=0 BIND dn="` + testBindDN + `" method=`); n != 1 {
		t.Errorf("slapd had %d bound connections for 5 lookups, want 1", n)
	}
	s.stop()
	s.start()
	wantVerdict(t, "bob after a restart", ask(l, "bob@example.test"), smtpapp.VerdictAccept, "")
}

// TestRetryOnDeadConnection: a pooled connection that turns out dead when
// a search is sent on it is replaced at once, in the same lookup.
func TestRetryOnDeadConnection(t *testing.T) {
	s := startSlapd(t)
	p := startDropProxy(t, s.ldapURL)
	l := s.newCheck(t, func(l *LDAP) { l.URL = "ldap://" + p.addr })
	wantVerdict(t, "alice", ask(l, "alice@example.test"), smtpapp.VerdictAccept, "")
	p.drop <- struct{}{}
	wantVerdict(t, "bob, on a connection that is dropped", ask(l, "bob@example.test"), smtpapp.VerdictAccept, "")
	if n := s.logCount(` op=0 BIND dn="` + testBindDN + `" method=`); n != 2 {
		t.Errorf("slapd had %d bound connections, want 2 (the first, and its replacement)", n)
	}
}

// TestTimeout: a server that accepts but never answers makes the lookup
// fail within the timeout, as unreachable.
func TestTimeout(t *testing.T) {
	ln := silentListener(t)
	l := &LDAP{URL: "ldap://" + ln, BaseDN: testSuffix, Timeout: caddy.Duration(200 * time.Millisecond)}
	if err := provision(t, l); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	wantVerdict(t, "silent server", ask(l, "alice@example.test"), smtpapp.VerdictTempfail, "451 4.4.3")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("lookup took %v with a 200ms timeout", d)
	}
}

// TestPoolBound: concurrent lookups share at most pool_size connections
// and all get their answer.
func TestPoolBound(t *testing.T) {
	s := startSlapd(t)
	l := s.newCheck(t, func(l *LDAP) { l.PoolSize = 2 })
	var wg sync.WaitGroup
	verdicts := make([]smtpapp.Verdict, 20)
	for i := range verdicts {
		wg.Go(func() { verdicts[i] = ask(l, fmt.Sprintf("user%d@example.test", i)) })
	}
	wg.Wait()
	for i, v := range verdicts {
		wantVerdict(t, fmt.Sprintf("user%d", i), v, smtpapp.VerdictReject, "550 5.1.1")
	}
	if n := s.logCount(` op=0 BIND dn="` + testBindDN + `" method=`); n < 1 || n > 2 {
		t.Errorf("slapd had %d bound connections for 20 concurrent lookups with pool_size 2, want 1 or 2", n)
	}
}
