package smtpsink

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandler(t *testing.T) {
	s, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.delivered(2, 100, true)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	get := func(path string, wantCode int) Stats {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != wantCode {
			t.Fatalf("%s: %s, want %d", path, resp.Status, wantCode)
		}
		var st Stats
		if wantCode != http.StatusBadRequest {
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatal(err)
			}
		}
		return st
	}
	st := get("/stats", http.StatusOK)
	if st.Messages != 1 || st.Recipients != 2 || st.Bytes != 100 || st.TLSMessages != 1 || st.FirstUnixNano == 0 || st.LastUnixNano < st.FirstUnixNano {
		t.Fatalf("stats: %+v", st)
	}
	if st := get("/wait?n=1&timeout=1s", http.StatusOK); st.Messages != 1 {
		t.Fatalf("wait: %+v", st)
	}
	if st := get("/wait?n=2&timeout=20ms", http.StatusGatewayTimeout); st.Messages != 1 {
		t.Fatalf("wait timeout: %+v", st)
	}
	get("/wait?n=x", http.StatusBadRequest)
}
