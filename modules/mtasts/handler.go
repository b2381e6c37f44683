// Package mtasts is the `http.handlers.mta_sts` HTTP handler (and its
// `mta_sts` Caddyfile directive): it publishes our MTA-STS policy
// (RFC 8461) in the `mta-sts.<domain>` site.
package mtasts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/instances"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler publishes the MTA-STS policy (RFC 8461) of our own mail
// domains at /.well-known/mta-sts.txt. Put it in the site for
// `mta-sts.<domain>`: Caddy gets that site its certificate, as MTA-STS
// requires. By default the policy names the hostnames of the smtp app's
// servers, so it follows the mail config. Senders learn about the policy
// from a TXT record that you publish: `_mta-sts.<domain> TXT "v=STSv1;
// id=<id>"`; the handler logs the record with the current id at start.
// Other requests pass to the next handler.
type Handler struct {
	// Mode is the policy mode: `enforce` (senders must use verified TLS to
	// a listed MX), `testing` (they report failures but deliver) or `none`
	// (withdraw a policy). Default: enforce.
	Mode string `json:"mode,omitempty"`

	// MX are the MX host patterns of the policy (`mx.example.com`, or
	// `*.example.com` for any one label under it). Default: the hostnames
	// of the smtp app's servers.
	MX []string `json:"mx,omitempty"`

	// MaxAge is how long senders may cache the policy. Default: 1 week
	// (RFC 8461 recommends weeks); at most about a year.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	body []byte
	id   string
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mta_sts",
		New: func() caddy.Module { return new(Handler) },
	}
}

// mtastsPath is where senders fetch the policy (RFC 8461 section 3.3).
const mtastsPath = "/.well-known/mta-sts.txt"

// Provision builds the policy text.
func (h *Handler) Provision(ctx caddy.Context) error {
	if h.Mode == "" {
		h.Mode = string(tlsupgrade.MTASTSEnforce)
	}
	if h.MaxAge == 0 {
		h.MaxAge = caddy.Duration(7 * 24 * time.Hour)
	}
	if len(h.MX) == 0 && h.Mode != string(tlsupgrade.MTASTSNone) {
		appIface, err := ctx.AppIfConfigured("smtp")
		if err != nil {
			return errors.New("mta_sts: no mx given and no smtp app to take the MX names from")
		}
		seen := map[string]bool{}
		for _, srv := range appIface.(*smtpapp.App).Servers {
			if !seen[srv.Hostname] {
				seen[srv.Hostname] = true
				h.MX = append(h.MX, srv.Hostname)
			}
		}
		sort.Strings(h.MX)
	}
	policy := &tlsupgrade.MTASTSPolicy{Version: "STSv1", Mode: tlsupgrade.MTASTSMode(h.Mode), MX: h.MX, MaxAge: time.Duration(h.MaxAge).Truncate(time.Second)}
	text := []byte(policy.String())
	// Check what we publish with the parser our own senders use.
	if _, err := tlsupgrade.ParseMTASTSPolicy(text); err != nil {
		return fmt.Errorf("mta_sts: invalid policy: %w", err)
	}
	sum := sha256.Sum256(text)
	h.body, h.id = text, hex.EncodeToString(sum[:8])
	running.Add(h)
	ctx.Logger().Info("serving MTA-STS policy; publish the TXT record _mta-sts.<domain> with this id (change it whenever the policy changes)",
		zap.String("txt", "v=STSv1; id="+h.id), zap.String("mode", h.Mode), zap.Strings("mx", h.MX))
	return nil
}

// ID returns the policy id for the TXT record.
func (h *Handler) ID() string { return h.id }

// Cleanup forgets the handler.
func (h *Handler) Cleanup() error {
	running.Remove(h)
	return nil
}

// running are the provisioned handlers, for Policies.
var running instances.Set[*Handler]

// Policy is what a running handler publishes.
type Policy struct {
	// ID is the id of the `_mta-sts` TXT record.
	ID   string
	Mode string
	MX   []string
}

// Policies returns the policies of the handlers in this process, each
// once, for `caddy smtp dns-records`. While a config reload runs, the old
// and the new config's may both be listed.
func Policies() []Policy {
	var out []Policy
	seen := map[string]bool{}
	running.Each(func(h *Handler) {
		if !seen[h.id] {
			seen[h.id] = true
			out = append(out, Policy{ID: h.id, Mode: h.Mode, MX: h.MX})
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ServeHTTP serves the policy.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.URL.Path != mtastsPath {
		return next.ServeHTTP(w, r)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, nil)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(h.body)))
	w.Header().Set("Cache-Control", "max-age=300")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(h.body)
	}
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	mta_sts {
//		mode    enforce|testing|none
//		mx      <pattern>...
//		max_age <duration>
//	}
//
// The block is optional.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("duplicate mta_sts option '%s'", opt)
		}
		seen[opt] = true
		switch opt {
		case "mode":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch d.Val() {
			case "enforce", "testing", "none":
				h.Mode = d.Val()
			default:
				return d.Errf("mta_sts mode must be enforce, testing or none, not '%s'", d.Val())
			}
		case "mx":
			h.MX = d.RemainingArgs()
			if len(h.MX) == 0 {
				return d.ArgErr()
			}
			continue
		case "max_age":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur < time.Second || dur > tlsupgrade.MaxMTASTSMaxAge {
				return d.Errf("mta_sts max_age must be a duration from 1s to about a year, not '%s'", d.Val())
			}
			h.MaxAge = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized mta_sts option '%s'", opt)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
