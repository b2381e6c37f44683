package queuetest

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// FuzzMessage builds a message with every envelope field set from arbitrary
// bytes, for fuzz targets of the stores and the envelope encoding. The first
// byte gives the flags; the rest, split at NUL bytes, gives sender, BODY,
// RET, ENVID, HELO, server and then one recipient per piece, whose fields
// are split at 0x01 (address, ORCPT, NOTIFY values separated by ',', last
// reply). Strings are made valid UTF-8 (JSON cannot hold anything else).
func FuzzMessage(data []byte) *queue.Message {
	var flags byte
	if len(data) > 0 {
		flags, data = data[0], data[1:]
	}
	pieces := strings.Split(strings.ToValidUTF8(string(data), "\uFFFD"), "\x00")
	next := func() string {
		if len(pieces) == 0 {
			return ""
		}
		p := pieces[0]
		pieces = pieces[1:]
		return p
	}
	m := &queue.Message{
		From: next(), Body: next(), Ret: next(), EnvID: next(),
		Client:      queue.ClientInfo{Addr: "192.0.2.7", Helo: next(), TLSVersion: "TLSv1.3", AuthUser: "u"},
		Server:      next(),
		Arrived:     time.Unix(1_700_000_000+int64(flags)*3607, int64(len(data))*1009).UTC(),
		RequireTLS:  flags&1 != 0,
		SMTPUTF8:    flags&2 != 0,
		TLSOptional: flags&4 != 0,
		Held:        flags&8 != 0,
		Attempts:    int(flags >> 4),
	}
	if flags&16 != 0 {
		m.NextAttempt = m.Arrived.Add(time.Duration(flags) * time.Second)
	}
	for _, p := range pieces {
		f := strings.Split(p, "\x01")
		r := &queue.Recipient{Addr: f[0], DSNPending: len(f)%2 == 0}
		if len(f) > 1 {
			r.ORCPT = f[1]
		}
		if len(f) > 2 && f[2] != "" {
			r.Notify = strings.Split(f[2], ",")
		}
		if len(f) > 3 {
			r.LastReply, r.Status = f[3], queue.Failed
		}
		m.Recipients = append(m.Recipients, r)
	}
	return m
}

// CommitReload commits m with body to s under id, closes s, opens the store
// in dir again and checks that it loads m (ID and size set by the commit)
// and body unchanged, with the messages that were there before. Load may
// report damage found in dir before the commit. It returns the reopened
// store.
func CommitReload(t *testing.T, open OpenFunc, dir string, s queue.Store, id string, m *queue.Message, body []byte) queue.Store {
	t.Helper()
	before, _ := s.Load()
	w, err := s.Create(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = Open(t, open, dir)
	msgs, _ := s.Load()
	got := make(map[string]*queue.Message)
	for _, m := range msgs {
		got[m.ID] = m
	}
	if m.ID != id || m.Size != int64(len(body)) {
		t.Fatalf("commit set id %q size %d, want %q %d", m.ID, m.Size, id, len(body))
	}
	if !reflect.DeepEqual(got[id], m) {
		t.Fatalf("reloaded envelope %+v, committed %+v", got[id], m)
	}
	if b := Body(t, s, id); !bytes.Equal(b, body) {
		t.Fatalf("reloaded body %q, committed %q", b, body)
	}
	for _, old := range before {
		if old.ID != id && !reflect.DeepEqual(got[old.ID], old) {
			t.Fatalf("message %s was %+v before the commit, %+v after", old.ID, old, got[old.ID])
		}
	}
	return s
}
