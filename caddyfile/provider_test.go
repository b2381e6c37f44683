package caddyfile

import (
	"context"

	"github.com/caddyserver/caddy/v2"
	caddycf "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(testProvider{})
}

// testProvider stands for a third-party authentication provider: its
// golden test (testdata/auth_provider) shows that `authentication <name>
// <args...> { ... }` hands the module its name, arguments and block.
type testProvider struct {
	NameToken string              `json:"name_token,omitempty"`
	Args      []string            `json:"args,omitempty"`
	Options   map[string][]string `json:"options,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (testProvider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.authentication.providers.test_provider",
		New: func() caddy.Module { return new(testProvider) },
	}
}

// UnmarshalCaddyfile records the tokens it gets.
func (p *testProvider) UnmarshalCaddyfile(d *caddycf.Dispenser) error {
	d.Next()
	p.NameToken = d.Val()
	p.Args = d.RemainingArgs()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if p.Options == nil {
			p.Options = make(map[string][]string)
		}
		p.Options[d.Val()] = d.RemainingArgs()
	}
	return nil
}

// Authenticate lets nobody in.
func (*testProvider) Authenticate(context.Context, string, string) (*smtpapp.Identity, error) {
	return nil, nil
}

// Interface guards
var (
	_ caddycf.Unmarshaler   = (*testProvider)(nil)
	_ smtpapp.Authenticator = (*testProvider)(nil)
)
