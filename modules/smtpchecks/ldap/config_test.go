package ldap

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycf "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	_ "github.com/caddy-smtp/caddy-smtp/caddyfile" // the smtp global option
)

func TestBuildFilter(t *testing.T) {
	for _, tc := range []struct{ template, local, domain, want string }{
		{"(mail={address})", "alice", "example.test", `(mail=alice@example.test)`},
		{"(&(uid={local})(dc={domain}))", "*)(uid=*", "ex(a)mple.test", `(&(uid=\2a\29\28uid=\2a)(dc=ex\28a\29mple.test))`},
		{"(mail={address})", `a\2a`, "x", `(mail=a\5c2a@x)`},
		{"(cn={local}{local})", "{domain}", "d", `(cn={domain}{domain})`}, // values are not templates
	} {
		if got := buildFilter(tc.template, tc.local, tc.domain); got != tc.want {
			t.Errorf("buildFilter(%q, %q, %q) = %q, want %q", tc.template, tc.local, tc.domain, got, tc.want)
		}
	}
}

func TestSplitAddress(t *testing.T) {
	for in, want := range map[string][2]string{
		"Alice@Example.TEST":       {"alice", "example.test"},
		"alice+news@example.test.": {"alice", "example.test"},
		"+x@example.test":          {"+x", "example.test"},
		`"a@b"@example.test`:       {`"a@b"`, "example.test"},
		"postmaster":               {"postmaster", ""},
	} {
		if l, d := splitAddress(in); l != want[0] || d != want[1] {
			t.Errorf("splitAddress(%q) = %q, %q, want %q, %q", in, l, d, want[0], want[1])
		}
	}
}

// TestCache: bounded, least recently used out first, expired answers
// forgotten, safe for concurrent use.
func TestCache(t *testing.T) {
	now := time.Now()
	c := newCache(2)
	c.put("a", true, now.Add(time.Hour))
	c.put("b", false, now.Add(time.Hour))
	if found, ok := c.get("a", now); !ok || !found {
		t.Fatalf("a: found=%v ok=%v, want a cached positive answer", found, ok)
	}
	c.put("c", false, now.Add(time.Minute)) // b is the least recently used
	if _, ok := c.get("b", now); ok {
		t.Error("b is still cached beyond the size")
	}
	if found, ok := c.get("c", now); !ok || found {
		t.Errorf("c: found=%v ok=%v, want a cached negative answer", found, ok)
	}
	if _, ok := c.get("c", now.Add(time.Minute)); ok {
		t.Error("c is still given at its expiry")
	}
	if len(c.byKey) != 1 || c.order.Len() != 1 {
		t.Errorf("%d keys and %d list entries after the expiry, want 1", len(c.byKey), c.order.Len())
	}

	c = newCache(50)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				key := fmt.Sprintf("u%d", (g*500+i)%200)
				c.put(key, i%2 == 0, now.Add(time.Hour))
				c.get(key, now)
			}
		})
	}
	wg.Wait()
	if len(c.byKey) != 50 || c.order.Len() != 50 {
		t.Errorf("%d keys and %d list entries, want 50", len(c.byKey), c.order.Len())
	}
}

// TestProvisionErrors: a config mistake fails the load with a lowercase
// error that names the option.
func TestProvisionErrors(t *testing.T) {
	good := func() *LDAP {
		return &LDAP{URL: "ldap://127.0.0.1:1", BaseDN: "dc=example,dc=test"}
	}
	for _, tc := range []struct {
		change func(*LDAP)
		want   string
	}{
		{func(l *LDAP) { l.URL = "" }, "ldap: url is required"},
		{func(l *LDAP) { l.URL = "http://ldap.example.test" }, "ldap: url: \"http://ldap.example.test\": want ldap://"},
		{func(l *LDAP) { l.URL = "ldap://h/dc=example?mail" }, "want only a host and a port"},
		{func(l *LDAP) { l.URL = "ldapi://" }, "want ldapi://<percent-encoded socket path>"},
		{func(l *LDAP) { l.BaseDN = "" }, "ldap: base_dn is required"},
		{func(l *LDAP) { l.BaseDN = "example" }, "ldap: base_dn \"example\""},
		{func(l *LDAP) { l.Filter = "(mail=alice@example.test)" }, "uses none of {address}, {local}, {domain}"},
		{func(l *LDAP) { l.Filter = "(mail={address}" }, "ldap: filter \"(mail={address}\""},
		{func(l *LDAP) { l.Scope = "subtree" }, "ldap: scope \"subtree\": want sub, one or base"},
		{func(l *LDAP) { l.Timeout = -1 }, "must not be negative"},
		{func(l *LDAP) { l.OnUnreachable = "reject" }, "ldap: on_unreachable \"reject\""},
		{func(l *LDAP) { l.StartTLS = true; l.URL = "ldaps://h" }, "start_tls is for ldap:// URLs"},
		{func(l *LDAP) { l.CA = []string{"ca.pem"} }, "ca and server_name need TLS"},
		{func(l *LDAP) { l.URL, l.CA = "ldaps://h", []string{"/nonexistent/ca.pem"} }, "ldap: ca: open /nonexistent/ca.pem"},
		{func(l *LDAP) { l.BindPassword = "x" }, "ldap: bind_password without bind_dn"},
		{func(l *LDAP) { l.BindDN = "cn=x" }, "ldap: bind_dn without bind_password"},
	} {
		l := good()
		tc.change(l)
		err := provision(t, l)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one containing %q", l, err, tc.want)
		}
	}
	if err := provision(t, good()); err != nil {
		t.Errorf("good config: %v", err)
	}
}

// TestBindPasswordPlaceholder: the password is taken from the environment
// when the config is loaded; an unset variable fails the load without
// showing the password.
func TestBindPasswordPlaceholder(t *testing.T) {
	t.Setenv("LDAP_TEST_PASSWORD", "from-env")
	l := &LDAP{URL: "ldaps://h", BaseDN: "dc=x", BindDN: "cn=gw,dc=x", BindPassword: "{env.LDAP_TEST_PASSWORD}"}
	if err := provision(t, l); err != nil {
		t.Fatal(err)
	}
	if l.pool.password != "from-env" {
		t.Errorf("password %q, want the environment's", l.pool.password)
	}
	l = &LDAP{URL: "ldaps://h", BaseDN: "dc=x", BindDN: "cn=gw,dc=x", BindPassword: "s3cret{env.LDAP_TEST_UNSET}"}
	err := provision(t, l)
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "bind_password") {
		t.Errorf("error %v, want one about bind_password that does not show it", err)
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddycf.NewTestDispenser(`ldap ldaps://ldap.example.test {
		base_dn "ou=people,dc=example,dc=test"
		filter (&(objectClass=inetOrgPerson)(uid={local}))
		scope one
		bind_dn cn=gateway,dc=example,dc=test
		bind_password {env.LDAP_PASSWORD}
		start_tls
		ca /etc/ssl/a.pem /etc/ssl/b.pem
		server_name ldap.internal
		timeout 3s
		positive_ttl 2h
		negative_ttl 1m
		cache_size 10
		pool_size 2
		on_unreachable accept
	}`)
	var got LDAP
	if err := got.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := LDAP{URL: "ldaps://ldap.example.test", BaseDN: "ou=people,dc=example,dc=test",
		Filter: "(&(objectClass=inetOrgPerson)(uid={local}))", Scope: "one",
		BindDN: "cn=gateway,dc=example,dc=test", BindPassword: "{env.LDAP_PASSWORD}", StartTLS: true,
		CA: []string{"/etc/ssl/a.pem", "/etc/ssl/b.pem"}, ServerName: "ldap.internal",
		Timeout: caddy.Duration(3 * time.Second), PositiveTTL: caddy.Duration(2 * time.Hour), NegativeTTL: caddy.Duration(time.Minute),
		CacheSize: 10, PoolSize: 2, OnUnreachable: "accept"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// TestAdaptErrors: mistakes in `check ldap` are refused by the Caddyfile
// adapter with the file and line.
func TestAdaptErrors(t *testing.T) {
	for _, tc := range []struct {
		block, want string
		line        int // of the mistake
	}{
		{"check ldap", "want the directory's URL", 4},
		{"check ldap ldap://h ldap://i {\nbase_dn dc=x\n}", "wrong argument count", 4},
		{"check ldap ldap://h {\n}", "ldap: base_dn is required", 4},
		{"check ldap ldap://h {\nbase_dn dc=x\nbase_dn dc=y\n}", "ldap: duplicate option 'base_dn'", 6},
		{"check ldap ldap://h {\nbase_dn dc=x\nbind_pw x\n}", "unrecognized ldap option 'bind_pw'", 6},
		{"check ldap ldap://h {\nbase_dn dc=x\nscope deep\n}", "ldap: scope: want sub, one or base, got 'deep'", 6},
		{"check ldap ldap://h {\nbase_dn dc=x\ntimeout soon\n}", "ldap: timeout: want a positive duration, got 'soon'", 6},
		{"check ldap ldap://h {\nbase_dn dc=x\ncache_size -1\n}", "ldap: cache_size: want a positive integer, got '-1'", 6},
		{"check ldap ldap://h {\nbase_dn dc=x\non_unreachable reject\n}", "ldap: on_unreachable: want tempfail or accept, got 'reject'", 6},
		{"check ldap ldap://h {\nbase_dn dc=x\nstart_tls yes\n}", "wrong argument count", 6},
		{"check ldap ldap://h {\nbase_dn dc=x\nca\n}", "wrong argument count", 6},
		{"check ldap ldap://h {\nbase_dn dc=x\nfilter\n}", "wrong argument count", 6},
	} {
		body := "{\n\tsmtp {\n\t\troute example.test {\n" + tc.block + "\nmaildir /var/mail/{local}\n\t\t}\n\t}\n}\n"
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), map[string]any{"filename": "Caddyfile"})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), fmt.Sprintf("Caddyfile:%d", tc.line)) {
			t.Errorf("%q: error %v, want one containing %q and Caddyfile:%d", tc.block, err, tc.want, tc.line)
		}
	}
}
