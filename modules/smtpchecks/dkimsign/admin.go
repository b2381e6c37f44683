package dkimsign

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/adminhttp"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI is the `admin.api.smtp_dkim` module: the DKIM keys in the
// running Caddy's storage, on the admin endpoint.
//
//	GET  /smtp/dkim/records[?domain=<d>]  the records to publish
//	POST /smtp/dkim/<domain>/rotate       start a rotation
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.smtp_dkim",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/smtp/dkim/", Handler: caddy.AdminHandlerFunc(serve)}}
}

func serve(w http.ResponseWriter, r *http.Request) error {
	st, err := adminhttp.ActiveStorage()
	if err != nil {
		return err
	}
	path := strings.TrimPrefix(r.URL.Path, "/smtp/dkim/")
	switch {
	case path == "records":
		if r.Method != http.MethodGet {
			return adminhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method))
		}
		recs, err := records(r, st)
		if err != nil {
			return adminhttp.Error(http.StatusInternalServerError, err)
		}
		return adminhttp.WriteJSON(w, recs)
	case strings.HasSuffix(path, "/rotate"):
		if r.Method != http.MethodPost {
			return adminhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method))
		}
		domain := strings.ToLower(strings.TrimSuffix(path, "/rotate"))
		state, err := Rotate(r.Context(), st, domain, time.Now())
		if err != nil {
			return adminhttp.Error(http.StatusBadRequest, err)
		}
		refreshRunning(r.Context())
		return adminhttp.WriteJSON(w, state)
	}
	return adminhttp.Error(http.StatusNotFound, fmt.Errorf("no such resource: %s", r.URL.Path))
}

// records returns the records of one domain (?domain=) or of all.
func records(r *http.Request, st certmagic.Storage) ([]Record, error) {
	domains := []string{strings.ToLower(r.URL.Query().Get("domain"))}
	if domains[0] == "" {
		var err error
		if domains, err = Domains(r.Context(), st); err != nil {
			return nil, err
		}
	}
	out := []Record{}
	for _, d := range domains {
		recs, err := Records(r.Context(), st, d)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

// Interface guards
var _ caddy.AdminRouter = (*adminAPI)(nil)
