package queue_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

// FuzzEnvelope checks the envelope record the stores keep next to a body
// (a Message as JSON) both ways: any bytes decode to a message or an error,
// and a decoded message encodes to a fixed point; a message built from the
// same bytes survives encode and decode unchanged.
func FuzzEnvelope(f *testing.F) {
	raw := []byte("\x17s@sender.test\x008BITMIME\x00HDRS\x00env-1\x00helo.test\x00mx\x00a@example.test\x01rfc822;a@example.test\x01SUCCESS,DELAY\x01451 4.4.1 try later\x00b@example.test")
	env, err := json.Marshal(queuetest.FuzzMessage(raw))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(env)
	f.Add([]byte(`{"id":"X","rcpts":null,"arrived":"2026-01-02T03:04:05.999999999+01:00","next_attempt":"0001-01-01T00:00:00Z","size":-1}`))
	f.Add([]byte(`{"id":"Y","rcpts":[null,{"addr":"\u0000\ud800"}],"client":{}}`))
	f.Add([]byte("\x01\xff\xfe\x00\x00x\x01\x01,\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var dec queue.Message
		if err := json.Unmarshal(data, &dec); err == nil {
			enc, err := json.Marshal(&dec)
			if err != nil {
				t.Fatalf("decoded envelope does not encode: %v", err)
			}
			var again queue.Message
			if err := json.Unmarshal(enc, &again); err != nil {
				t.Fatalf("own encoding %s does not decode: %v", enc, err)
			}
			// Compared as JSON: an empty list decodes to an empty
			// slice the first time and to nil after omitempty.
			if enc2, _ := json.Marshal(&again); !bytes.Equal(enc2, enc) {
				t.Fatalf("%s decodes, encodes as %s, then as %s", data, enc, enc2)
			}
		}

		m := queuetest.FuzzMessage(data)
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("encoding %+v: %v", m, err)
		}
		var back queue.Message
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatalf("own encoding %s does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(&back, m) {
			t.Fatalf("round trip changed the envelope:\n%+v\n%+v", m, &back)
		}
	})
}
