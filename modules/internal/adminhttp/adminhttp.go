// Package adminhttp holds what the smtp modules' admin API endpoints
// share: JSON responses, API errors, method checks and the storage of the
// running config.
package adminhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// Error is an admin API error with its HTTP status.
func Error(status int, err error) error {
	return caddy.APIError{HTTPStatus: status, Err: err}
}

// WriteJSON writes v as the JSON response.
func WriteJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// Allow answers 405 (with an Allow header) unless the request uses one of
// the methods.
func Allow(w http.ResponseWriter, r *http.Request, methods ...string) error {
	for _, m := range methods {
		if r.Method == m {
			return nil
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	return Error(http.StatusMethodNotAllowed, fmt.Errorf("method not allowed: %s", r.Method))
}

// ActiveStorage returns the storage of the running config; 503 while no
// config runs.
func ActiveStorage() (certmagic.Storage, error) {
	ctx := caddy.ActiveContext()
	if ctx.Context == nil {
		return nil, Error(http.StatusServiceUnavailable, errors.New("no config is running (Caddy may still be starting it)"))
	}
	return ctx.Storage(), nil
}
