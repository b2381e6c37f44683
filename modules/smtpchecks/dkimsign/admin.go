package dkimsign

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

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
	ctx := caddy.ActiveContext()
	if ctx.Context == nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: errors.New("no config is running (Caddy may still be starting it)")}
	}
	st := ctx.Storage()
	path := strings.TrimPrefix(r.URL.Path, "/smtp/dkim/")
	switch {
	case path == "records":
		if r.Method != http.MethodGet {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
		}
		recs, err := records(r, st)
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
		}
		return writeJSON(w, recs)
	case strings.HasSuffix(path, "/rotate"):
		if r.Method != http.MethodPost {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
		}
		domain := strings.ToLower(strings.TrimSuffix(path, "/rotate"))
		state, err := Rotate(r.Context(), st, domain, time.Now())
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
		refreshRunning(r.Context())
		return writeJSON(w, state)
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no such resource: %s", r.URL.Path)}
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

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// Interface guards
var _ caddy.AdminRouter = (*adminAPI)(nil)
