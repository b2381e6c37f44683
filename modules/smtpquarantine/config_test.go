package smtpquarantine

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestDigestConfig: the digest's defaults, and its config errors, which
// name the field.
func TestDigestConfig(t *testing.T) {
	d := Digest{BaseURL: "https://q.example.com/quarantine", Domains: []string{"Example.COM."}}
	if err := d.provision(); err != nil {
		t.Fatal(err)
	}
	if time.Duration(d.Every) != 24*time.Hour || time.Duration(d.LinkLifetime) != 7*24*time.Hour ||
		d.base.String() != "https://q.example.com/quarantine/" || d.Domains[0] != "example.com" {
		t.Errorf("defaults: %+v, base %s", d, d.base)
	}
	for want, bad := range map[string]Digest{
		"base_url":      {BaseURL: "quarantine.example.com"},
		"base_url ":     {BaseURL: "ftp://q.example.com/"},
		"base_url  ":    {BaseURL: "https://q.example.com/?x=1"},
		"every":         {BaseURL: "https://q.example.com/", Every: caddy.Duration(time.Second)},
		"link_lifetime": {BaseURL: "https://q.example.com/", LinkLifetime: caddy.Duration(time.Minute)},
		"from":          {BaseURL: "https://q.example.com/", From: "postmaster"},
		"domains":       {BaseURL: "https://q.example.com/", Domains: []string{"not a domain"}},
	} {
		if err := bad.provision(); err == nil || !strings.Contains(err.Error(), strings.TrimSpace(want)) {
			t.Errorf("%+v: %v, want an error about %s", bad, err, want)
		}
	}
	for _, h := range []Handler{{PageSize: 0}, {PageSize: 501}, {PageSize: 10, Admins: []string{" "}}} {
		if err := h.Validate(); err == nil {
			t.Errorf("Validate(%+v) passed", h)
		}
	}
}
