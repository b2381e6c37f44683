package mtasts

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("mta_sts", parseMTASTS)
	httpcaddyfile.RegisterDirectiveOrder("mta_sts", httpcaddyfile.Before, "respond")
}

// parseMTASTS sets up the `mta_sts` HTTP handler directive, which publishes
// the MTA-STS policy of our mail domains in the `mta-sts.<domain>` site:
//
//	mta-sts.example.com {
//		mta_sts {
//			mode    enforce|testing|none
//			mx      <pattern>...
//			max_age <duration>
//		}
//	}
func parseMTASTS(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}
