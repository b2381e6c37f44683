package smtpapp_test

import (
	"slices"
	"testing"

	"go.uber.org/zap"

	. "github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// recorder is an Observer that writes down what it is told.
type recorder struct{ events []string }

func (r *recorder) MessageReceived(server, from string, tls bool, rcpts int) {
	r.events = append(r.events, "received")
}

func (r *recorder) DeliveryResult(domain, result, transport string) {
	r.events = append(r.events, domain+" "+result+" "+transport)
}

// TestObservers: every registration is told, until its remove (which may
// be called twice); other apps' observers are not told.
func TestObservers(t *testing.T) {
	app, other := new(App), new(App)
	a, b := new(recorder), new(recorder)
	removeA := app.AddObserver(a)
	removeB := app.AddObserver(b)
	removeOther := other.AddObserver(b)
	defer removeOther()
	app.Notify(func(o Observer) { o.MessageReceived("mx", "x@y.test", true, 1) })
	removeA()
	removeA()
	app.Notify(func(o Observer) { o.MessageReceived("mx", "x@y.test", true, 1) })
	if len(a.events) != 1 || len(b.events) != 2 {
		t.Errorf("a was told %v, b %v: want a once (then removed), b twice", a.events, b.events)
	}
	removeB()
	app.Notify(func(o Observer) { o.MessageReceived("mx", "x@y.test", true, 1) })
	if len(b.events) != 2 {
		t.Errorf("b was told %v, want two events and none after its remove", b.events)
	}
}

// TestObserveDelivery: the transport comes from the session's log
// fields, as the targets and the queue write them.
func TestObserveDelivery(t *testing.T) {
	app := new(App)
	r := new(recorder)
	defer app.AddObserver(r)()
	for _, session := range [][]zap.Field{
		{zap.String("mx", "mx.b.test"), zap.Bool("tls", true), zap.String("tls_version", "TLSv1.3")}, // smtpclient
		{zap.String("target", "lmtp"), zap.Bool("tls", false)},                                       // lmtp
		{zap.String("target", "maildir")},                                                            // maildir
		{zap.String("destination", "b.test")},                                                        // no session opened
	} {
		app.ObserveDelivery("u@B.Test", "delivered", session)
	}
	want := []string{"b.test delivered tls", "b.test delivered plaintext", "b.test delivered local", "b.test delivered none"}
	if !slices.Equal(r.events, want) {
		t.Errorf("events %q, want %q", r.events, want)
	}
}
