package smtpapp_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/emersion/go-msgauth/dkim"
	mdns "github.com/miekg/dns"

	"github.com/caddy-smtp/caddy-smtp/internal/testdns"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpchecks/dkimsign"
	"github.com/caddy-smtp/caddy-smtp/resolver"
)

// TestDKIMSigning: the dkim_sign check signs what relay_networks clients
// send from its domain (and subdomains) with an RSA and an Ed25519 key it
// made in Caddy storage; both signatures verify with go-msgauth and with
// python3-dkim against the records it says to publish, served by a
// loopback DNS server. Mail from the internet, and from other domains, is
// not signed. A rotation keeps the old keys until the new records are seen
// in DNS, then signs with the new ones, and lists the old ones as retired.
func TestDKIMSigning(t *testing.T) {
	dns := testdns.Start(t)
	e := newTestEnv(t)
	storageDir := t.TempDir()
	app := e.load(e.config(map[string]any{
		"servers": map[string]any{"mx": map[string]any{
			"listen":         []any{map[string]any{"address": "127.0.0.1:0", "tls": "off"}},
			"relay_networks": []string{"127.0.0.2/32"},
			"checks": []any{map[string]any{"check": "dkim_sign", "domains": []string{"example.org"},
				"check_interval": "100ms", "resolvers": []string{dns.Addr()}}},
		}},
	}, func(c map[string]any) { c["storage"] = map[string]any{"module": "file_system", "root": storageDir} }))
	addr := addrsOf(app, "mx")[0]
	st := &certmagic.FileStorage{Path: storageDir}
	ctx := context.Background()
	published := map[string]string{}
	publish := func(state string) {
		recs, err := dkimsign.Records(ctx, st, "example.org")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.State == state {
				dns.AddTXT(r.Name, testutil.TXTStrings(r.TXT)...)
				published[r.Name] = r.TXT
			}
		}
	}
	publish("current")
	if len(published) != 2 {
		t.Fatalf("records to publish: %v, want an RSA and an Ed25519 key", published)
	}
	res, err := resolver.New([]string{dns.Addr()}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	send := func(from, client string) []byte {
		t.Helper()
		n++
		local := "u" + string(rune('a'+n))
		d := dialFrom(t, client, addr)
		d.expect("220")
		d.cmd("EHLO client.example", "250")
		msg := strings.TrimSuffix(testMessage(from, local), "\r\n")
		if r := d.sendMail(from, local+"@example.test", msg); !strings.HasPrefix(r, "250") {
			t.Fatalf("%s: %q", from, r)
		}
		d.cmd("QUIT", "221")
		b, err := os.ReadFile(e.waitMail("example.test", local, 1)[0])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	verify := func(b []byte, wantSelectors ...string) {
		t.Helper()
		verifs, err := dkim.VerifyWithOptions(strings.NewReader(string(b)), &dkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) { return res.LookupTXT(ctx, name) }})
		if err != nil || len(verifs) != len(wantSelectors) {
			t.Fatalf("verify: %v, %d signatures, want %d:\n%s", err, len(verifs), len(wantSelectors), b)
		}
		for _, v := range verifs {
			if v.Err != nil || v.Domain != "example.org" {
				t.Errorf("signature d=%s: %v", v.Domain, v.Err)
			}
		}
		for _, sel := range wantSelectors {
			if !strings.Contains(string(b), "s="+sel+";") {
				t.Errorf("no signature with selector %s:\n%s", sel, b)
			}
		}
		if got := testutil.DKIMPyVerify(t, b, published); got != "signature ok" {
			t.Errorf("python3-dkim: %s", got)
		}
	}
	state, err := dkimsign.LoadState(ctx, st, "example.org")
	if err != nil || state == nil {
		t.Fatalf("state: %v", err)
	}
	old := state.Current
	verify(send("a@example.org", "127.0.0.2"), old.Base+"r", old.Base+"e")
	verify(send("a@news.example.org", "127.0.0.2"), old.Base+"r", old.Base+"e")
	for _, tc := range []struct{ from, client string }{{"a@example.org", "127.0.0.1"}, {"a@other.test", "127.0.0.2"}} {
		if b := send(tc.from, tc.client); strings.Contains(string(b), "DKIM-Signature:") {
			t.Errorf("%s from %s was signed:\n%s", tc.from, tc.client, b)
		}
	}

	// Rotation: the next keys sign only once their records are in DNS.
	state, err = dkimsign.Rotate(ctx, st, "example.org", time.Now().Add(24*time.Hour))
	if err != nil || state.Next == nil {
		t.Fatalf("rotate: %+v %v", state, err)
	}
	next := *state.Next
	// A refresh looked for the next records and did not find them: the
	// old keys still sign.
	eventually(t, "a lookup of the next keys' records", func() bool {
		return dns.Queries(next.Selector("rsa")+"._domainkey.example.org", mdns.TypeTXT) > 0
	})
	if s, err := dkimsign.LoadState(ctx, st, "example.org"); err != nil || s.Current.Base != old.Base || s.Next == nil {
		t.Fatalf("the next keys became current before their records were published: %+v %v", s, err)
	}
	verify(send("a@example.org", "127.0.0.2"), old.Base+"r", old.Base+"e")
	publish("next")
	eventually(t, "the next keys current", func() bool {
		s, err := dkimsign.LoadState(ctx, st, "example.org")
		return err == nil && s.Current.Base == next.Base && s.Next == nil
	})
	// The running check switches in the same refresh that saved the state.
	eventually(t, "signing with the next keys", func() bool {
		b := send("a@example.org", "127.0.0.2")
		return strings.Contains(string(b), "s="+next.Base+"r;")
	})
	verify(send("a@example.org", "127.0.0.2"), next.Base+"r", next.Base+"e")
	recs, err := dkimsign.Records(ctx, st, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	retired := 0
	for _, r := range recs {
		if r.State == "retired" && strings.HasPrefix(r.Selector, old.Base) && r.RetireAt.After(time.Now()) {
			retired++
		}
	}
	if retired != 2 {
		t.Errorf("records after the switch: %+v; want the old keys retired", recs)
	}
	if _, err := os.Stat(filepath.Join(storageDir, "smtp", "dkim", "example.org", old.Base+"r.pem")); err != nil {
		t.Errorf("the retired key is gone before its grace: %v", err)
	}
}
