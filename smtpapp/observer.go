package smtpapp

import (
	"slices"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Observer is told what the app receives and delivers, for modules that
// keep statistics of their own (the status page). The calls come from
// session and delivery goroutines, at the points where the app counts the
// same events in its metrics; they must be quick and must not block.
type Observer interface {
	// MessageReceived is called for each message queued (answered 250):
	// the name of the server that took it, the envelope sender (MAIL FROM,
	// "" for the null sender), whether the client's session was over TLS,
	// and the number of recipients.
	MessageReceived(server, from string, tls bool, rcpts int)
	// DeliveryResult is called for each recipient of each delivery
	// attempt: the recipient's domain, the result (`delivered`,
	// `deferred` or `bounced`) and how the attempt went: `tls`,
	// `plaintext`, `local` for a target that does not use the network
	// (maildir), or `none` when no session could be opened (the server
	// was not reached).
	DeliveryResult(rcptDomain, result, transport string)
}

// observers are the observers of each app. A side table rather than a
// field of App: it is all the observer API adds to the app.
var observers struct {
	mu sync.RWMutex
	m  map[*App][]*Observer
}

// AddObserver registers o with the app until remove is called (at the
// caller's Cleanup). The app does not deduplicate: an observer added twice
// is told everything twice.
func (a *App) AddObserver(o Observer) (remove func()) {
	entry := &o // a distinct pointer per registration
	observers.mu.Lock()
	defer observers.mu.Unlock()
	if observers.m == nil {
		observers.m = make(map[*App][]*Observer)
	}
	observers.m[a] = append(observers.m[a], entry)
	var once sync.Once
	return func() {
		once.Do(func() {
			observers.mu.Lock()
			defer observers.mu.Unlock()
			list := slices.DeleteFunc(slices.Clone(observers.m[a]), func(e *Observer) bool { return e == entry })
			if len(list) == 0 {
				delete(observers.m, a)
			} else {
				observers.m[a] = list
			}
		})
	}
}

// notify calls f for each observer of the app.
func (a *App) notify(f func(Observer)) {
	observers.mu.RLock()
	list := observers.m[a]
	observers.mu.RUnlock()
	for _, o := range list {
		f(*o)
	}
}

// observeDelivery tells the observers about one recipient's delivery
// attempt. The transport comes from the session's log fields: network
// targets put a `tls` field there, and the queue describes an attempt
// that opened no session by its `destination` alone.
func (a *App) observeDelivery(rcpt, status string, session []zap.Field) {
	transport := "local"
	for _, f := range session {
		switch {
		case f.Key == "destination" && transport == "local":
			transport = "none"
		case f.Key == "tls" && f.Type == zapcore.BoolType && f.Integer == 1:
			transport = "tls"
		case f.Key == "tls" && f.Type == zapcore.BoolType:
			transport = "plaintext"
		}
	}
	domain := queue.Domain(rcpt)
	a.notify(func(o Observer) { o.DeliveryResult(domain, status, transport) })
}
