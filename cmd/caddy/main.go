// Command caddy is Caddy with the standard modules, caddy-l4 and the
// caddy-smtp plugin compiled in, so that `go run ./cmd/caddy run --config
// Caddyfile` works from a checkout without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-l4"

	_ "github.com/caddy-smtp/caddy-smtp"
)

func main() {
	caddycmd.Main()
}
