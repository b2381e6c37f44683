package lists

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/adminhttp"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI is the `admin.api.smtp_lists` module: the allow and block
// lists on Caddy's admin endpoint (see docs/admin-api.md).
//
//	GET    /smtp/lists                           both lists
//	GET    /smtp/lists/<allow|block>             one list
//	POST   /smtp/lists/<allow|block>             add an entry: {"kind", "value", "comment"}
//	DELETE /smtp/lists/<allow|block>?kind=&value= remove an entry
//
// The lists live in the storage of the running config, so the endpoints
// work whether or not the config uses the lists check, and a change made
// on one node of a fleet sharing the storage reaches the others at their
// next reload_interval (this node's checks re-read it at once).
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.smtp_lists",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes. They are more specific than the
// /smtp/ of admin.api.smtp, so they take precedence over it.
func (a *adminAPI) Routes() []caddy.AdminRoute {
	h := caddy.AdminHandlerFunc(a.serve)
	return []caddy.AdminRoute{{Pattern: "/smtp/lists", Handler: h}, {Pattern: "/smtp/lists/", Handler: h}}
}

// adminTimeout bounds one change of a list, waiting for the lock included.
const adminTimeout = 30 * time.Second

// maxRequestBody bounds the JSON body of a POST.
const maxRequestBody = 64 << 10

func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	list := strings.Trim(strings.TrimPrefix(r.URL.Path, "/smtp/lists"), "/")
	if list != "" && !slices.Contains(Names, list) {
		return adminhttp.Error(http.StatusNotFound, fmt.Errorf("resource not found: %s (the lists are allow and block)", r.URL.Path))
	}
	methods := []string{http.MethodGet}
	if list != "" {
		methods = append(methods, http.MethodPost, http.MethodDelete)
	}
	if !slices.Contains(methods, r.Method) {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		return adminhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("method not allowed: %s", r.Method))
	}
	st, err := adminhttp.ActiveStorage()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	switch {
	case list == "":
		l, err := loadLists(ctx, st)
		if err != nil {
			return adminhttp.Error(http.StatusInternalServerError, err)
		}
		return adminhttp.WriteJSON(w, l)
	case r.Method == http.MethodGet:
		entries, err := loadList(ctx, st, list)
		if err != nil {
			return adminhttp.Error(http.StatusInternalServerError, err)
		}
		return adminhttp.WriteJSON(w, entries)
	case r.Method == http.MethodPost:
		return a.add(ctx, w, r, st, list)
	default:
		return a.remove(ctx, w, r, st, list)
	}
}

// add puts an entry in a list; an entry with the same kind and value gets
// the new comment and keeps the time it was added.
func (a *adminAPI) add(ctx context.Context, w http.ResponseWriter, r *http.Request, st certmagic.Storage, list string) error {
	var e Entry
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || dec.More() {
		if err == nil {
			err = errors.New("more than one object")
		}
		return adminhttp.Error(http.StatusBadRequest, fmt.Errorf("request body: want {\"kind\": ..., \"value\": ..., \"comment\": ...}: %v", err))
	}
	if !e.Added.IsZero() {
		return adminhttp.Error(http.StatusBadRequest, errors.New("request body: added is set by the server"))
	}
	if _, err := Normalize(e); err != nil {
		return adminhttp.Error(http.StatusBadRequest, err)
	}
	e, err := AddEntry(ctx, st, list, e)
	if err != nil {
		return adminhttp.Error(http.StatusInternalServerError, err)
	}
	return adminhttp.WriteJSON(w, e)
}

// remove takes the entry given by ?kind= and ?value= out of a list and
// returns it.
func (a *adminAPI) remove(ctx context.Context, w http.ResponseWriter, r *http.Request, st certmagic.Storage, list string) error {
	q := r.URL.Query()
	e, err := Normalize(Entry{Kind: q.Get("kind"), Value: q.Get("value")})
	if err != nil {
		return adminhttp.Error(http.StatusBadRequest, err)
	}
	err = updateList(ctx, st, list, func(entries []Entry) ([]Entry, error) {
		i := find(entries, e.Kind, e.Value)
		if i < 0 {
			return nil, errNotListed
		}
		e = entries[i]
		return slices.Delete(entries, i, i+1), nil
	})
	if errors.Is(err, errNotListed) {
		return adminhttp.Error(http.StatusNotFound, fmt.Errorf("%s %s is not in the %s list", e.Kind, e.Value, list))
	}
	if err != nil {
		return adminhttp.Error(http.StatusInternalServerError, err)
	}
	reloadRunning(ctx)
	return adminhttp.WriteJSON(w, e)
}

var errNotListed = errors.New("not listed")

// find returns the index of the entry with kind and value, or -1.
func find(entries []Entry, kind, value string) int {
	return slices.IndexFunc(entries, func(e Entry) bool { return e.Kind == kind && e.Value == value })
}

// Interface guards
var (
	_ caddy.Module      = (*adminAPI)(nil)
	_ caddy.AdminRouter = (*adminAPI)(nil)
)
