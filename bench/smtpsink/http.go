package smtpsink

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// maxWait bounds how long one /wait request may block.
const maxWait = 30 * time.Minute

// Handler serves the counters over HTTP:
//
//	GET /stats                    the Stats as JSON
//	GET /wait?n=N&timeout=2m      waits until N messages have arrived; 200
//	                              with the Stats, or 504 with the Stats when
//	                              the timeout (at most 30m) passes first
func (s *Sink) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	mux.HandleFunc("GET /wait", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "n must be a count of messages", http.StatusBadRequest)
			return
		}
		timeout := time.Minute
		if t := r.URL.Query().Get("timeout"); t != "" {
			if timeout, err = time.ParseDuration(t); err != nil || timeout <= 0 {
				http.Error(w, "bad timeout", http.StatusBadRequest)
				return
			}
		}
		st, err := s.Wait(n, min(timeout, maxWait))
		code := http.StatusOK
		if errors.Is(err, ErrTimeout) {
			code = http.StatusGatewayTimeout
		} else if err != nil {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, st)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
