package queue

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

// indexSamples are envelopes as the stores hold them, and a few written
// by hand that the fast path must leave to json.Unmarshal.
func indexSamples(t testing.TB) [][]byte {
	at := time.Date(2026, 12, 3, 15, 4, 5, 123456789, time.UTC)
	msgs := []*Message{
		{ID: "A1", From: "a@x.test", Arrived: at, Recipients: []*Recipient{{Addr: "u@Example.TEST"}}},
		{ID: "A2", Arrived: at, NextAttempt: at.Add(time.Hour), Attempts: 3, Held: true, Headers: "X-A: \"q\"\r\n",
			Recipients: []*Recipient{
				{Addr: "a@b.test", Status: Delivered, DSNPending: true},
				{Addr: "c@d.test", LastReply: "451 4.4.1 \\ \u2028 \x01", Notify: []string{"FAILURE", "DELAY"}},
				{Addr: "e@d.test."},
				{Addr: "f@a.test", Status: Failed},
			},
			Checks: []CheckResult{{Check: "spf", Verdict: "accept", Result: "pass"}}, Size: 1 << 40},
		{ID: "A3", Arrived: at, Held: true, Quarantine: &Quarantine{Check: "rspamd", Reason: "spam", At: at}},
		{ID: "A4", Arrived: at, Recipients: []*Recipient{{Addr: "\"a b\"@quoted.test"}, {Addr: "ü@bücher.test"}}},
		{ID: "A5"},
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out,
		[]byte(` {"ID":"K1","Held":true,"rcpts":[{"addr":"a@b.test"}]} `),
		[]byte(`{"id":"K1b","rcpts":[{"Addr":"a@b.test"},{"addr":"c@d.test","Status":"failed"}]}`),
		[]byte(`{"id":"K2","held":null,"rcpts":null,"arrived":"2026-12-03T15:04:05Z"}`),
		[]byte(`{"id":"K3","rcpts":[{"addr":"a@b.test"}],"rcpts":[{"addr":"c@d.test","status":"failed"},{"addr":"x@y.test"}]}`),
		[]byte(`{"id":"K4","rcpts":[{"addr":"a\u0040b.test"}],"x":[1,-2.5e+3,true,{"y":"\ud800"}]}`),
		[]byte(`{"id":"K5","arrived":"yesterday"}`),
		[]byte(`{"id":"K6"} x`),
		[]byte(`{"id":"K7","size":01}`),
		[]byte(`{"id":"K8","size":"big"}`),
		[]byte("{\"id\":\"K9\xff\"}"),
		[]byte("{\"id\":\"K10\x01\"}"),
		[]byte(`{"id":"K11","size":-}`),
		[]byte(`{"id":"K12","size":1.}`),
		[]byte(`{"id":"K13","size":1e+}`),
		[]byte(`{"id":"K14","x":"\q"}`),
		[]byte(`{"id":"K15","x":"\u12G4"}`),
	)
}

// TestParseIndexAsDecoder: ParseIndex says what json.Unmarshal and
// IndexOf say, and fails where Unmarshal fails, but for a type mismatch
// in a field it skips (never bad JSON): LoadMessage reports that one.
func TestParseIndexAsDecoder(t *testing.T) {
	for _, env := range indexSamples(t) {
		checkParseIndex(t, env)
	}
}

func checkParseIndex(t *testing.T, env []byte) {
	t.Helper()
	m := new(Message)
	decErr := json.Unmarshal(env, m)
	got, err := ParseIndex(env)
	_, typeErr := errors.AsType[*json.UnmarshalTypeError](decErr)
	switch {
	case decErr != nil && err == nil && !typeErr:
		t.Errorf("%s: ParseIndex accepted what json.Unmarshal refuses (%v): %+v", env, decErr, got)
	case decErr == nil && err != nil:
		t.Errorf("%s: ParseIndex: %v", env, err)
	case decErr == nil:
		if want := IndexOf(m); !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", env, got, want)
		}
	}
}

// TestParseIndexFast: envelopes as json.Marshal writes them go through
// the fast path (else startup pays for full decoding after all).
func TestParseIndexFast(t *testing.T) {
	for _, env := range indexSamples(t)[:2] {
		if _, err := parseIndexFast(env); err != nil {
			t.Errorf("%s: fast path: %v", env, err)
		}
	}
}

func FuzzParseIndex(f *testing.F) {
	for _, env := range indexSamples(f) {
		f.Add(env)
	}
	f.Fuzz(func(t *testing.T, env []byte) {
		m := new(Message)
		decErr := json.Unmarshal(env, m)
		got, err := ParseIndex(env)
		if decErr == nil && err != nil {
			t.Fatalf("%q: ParseIndex: %v", env, err)
		}
		if decErr == nil && !reflect.DeepEqual(got, IndexOf(m)) {
			t.Fatalf("%q:\n got %+v\nwant %+v", env, got, IndexOf(m))
		}
		if decErr != nil && err == nil {
			if _, ok := errors.AsType[*json.UnmarshalTypeError](decErr); !ok {
				t.Fatalf("%q: accepted, json.Unmarshal says %v", env, decErr)
			}
		}
	})
}
