package queue

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// marshalPlain is json.Marshal without HTML escaping.
func marshalPlain(t testing.TB, m *Message) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// fullMessage has every field of Message and of the types in it set.
func fullMessage() *Message {
	at := time.Date(2026, 12, 3, 19, 50, 1, 123456789, time.FixedZone("x", 3600))
	return &Message{
		ID: "WZBWIPFSLI7JMO7C", From: "a\"b\\c@sender.test",
		Recipients: []*Recipient{{
			Addr: "user@example.test", ORCPT: "rfc822;user@example.test", Notify: []string{"SUCCESS", "DELAY"},
			Status: Failed, LastReply: "550 5.1.1 <user@example.test>: no such user\r\n\tmore", RemoteMTA: "mx.example.test",
			Enhanced: "5.1.1", Action: "failed", DSNPending: true, DelayReported: true, DoubleBounceSeen: true,
		}, {Addr: "second@example.test"}},
		Arrived: at, RequireTLS: true, SMTPUTF8: true, TLSOptional: true, Body: "8BITMIME", Ret: "HDRS", EnvID: "env<1>&",
		Client: ClientInfo{Addr: "192.0.2.1", Helo: "client.example", TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_128_GCM_SHA256", AuthUser: "alice"},
		Server: "mx", Size: 123456, MessageID: "<id\u2028x\u2029@example>", Attempts: 3,
		NextAttempt: at.Add(time.Hour), Requeued: at.Add(time.Minute), Held: true,
		Headers: "Authentication-Results: mx; spf=pass\r\n", DropHeaders: []string{"Subject"},
		Checks:       []CheckResult{{Check: "spf", Verdict: "accept", Result: "pass"}, {Check: "rspamd", Verdict: "quarantine"}},
		DoubleBounce: true,
		Quarantine:   &Quarantine{Check: "rspamd", Reason: "spam \x01\x1f\b\f", At: at, Released: at.Add(time.Second)},
	}
}

// TestFullMessageSetsEveryField: fullMessage leaves no field at its zero
// value, so a field added to Message (or the types in it) and forgotten
// in AppendJSON makes TestAppendJSONMatchesMarshal fail.
func TestFullMessageSetsEveryField(t *testing.T) {
	var walk func(path string, v reflect.Value)
	walk = func(path string, v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() {
				t.Errorf("%s is nil in fullMessage", path)
				return
			}
			walk(path, v.Elem())
		case reflect.Slice:
			if v.Len() == 0 {
				t.Errorf("%s is empty in fullMessage", path)
				return
			}
			walk(path+"[0]", v.Index(0))
		case reflect.Struct:
			if v.Type() == reflect.TypeFor[time.Time]() {
				if v.Interface().(time.Time).IsZero() {
					t.Errorf("%s is zero in fullMessage", path)
				}
				return
			}
			for i := range v.NumField() {
				f := v.Type().Field(i)
				if !f.IsExported() {
					continue
				}
				walk(path+"."+f.Name, v.Field(i))
			}
		default:
			if v.IsZero() {
				t.Errorf("%s is zero in fullMessage", path)
			}
		}
	}
	walk("Message", reflect.ValueOf(fullMessage()))
}

func TestAppendJSONMatchesMarshal(t *testing.T) {
	invalid := &Message{ID: "X", From: "bad\xff\xfeutf8", Recipients: []*Recipient{nil}}
	for name, m := range map[string]*Message{
		"full":          fullMessage(),
		"zero":          {},
		"typical":       {ID: "A", From: "load@sender.test", Recipients: []*Recipient{{Addr: "user@example.test"}}, Arrived: time.Now(), Size: 4312},
		"invalid utf-8": invalid,
		"empty lists":   {Recipients: []*Recipient{}, DropHeaders: []string{}, Checks: []CheckResult{}},
	} {
		want := marshalPlain(t, m)
		got := AppendJSON([]byte("prefix"), m)
		if !bytes.Equal(got[len("prefix"):], want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got[len("prefix"):], want)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("a@b", "x\"y", "<>&\u2028", int64(5), true)
	f.Add("\xff", "\x00\x7f", "é", int64(-1), false)
	f.Fuzz(func(t *testing.T, from, addr, reply string, size int64, held bool) {
		m := fullMessage()
		m.From, m.Recipients[0].Addr, m.Recipients[0].LastReply, m.Size, m.Held = from, addr, reply, size, held
		got := AppendJSON(nil, m)
		if want := marshalPlain(t, m); !bytes.Equal(got, want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}

func BenchmarkEnvelopeJSON(b *testing.B) {
	m := &Message{ID: "WZBWIPFSLI7JMO7C", From: "load@sender.test", Recipients: []*Recipient{{Addr: "user@example.test"}},
		Arrived: time.Now(), Client: ClientInfo{Addr: "127.0.0.1", Helo: "smtpload.test", TLSVersion: "TLSv1.3", TLSCipher: "TLS_AES_128_GCM_SHA256"},
		Server: "gateway", Size: 4312, MessageID: "7.1.tphhxr@smtpload.test"}
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = AppendJSON(buf[:0], m)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
