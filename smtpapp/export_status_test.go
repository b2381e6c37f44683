package smtpapp

import "go.uber.org/zap"

// Notify calls f for each observer of the app, as the app's hooks do.
func (a *App) Notify(f func(Observer)) { a.notify(f) }

// ObserveDelivery is the delivery hook of the queue (Config.OnDelivery)
// as far as the observers see it.
func (a *App) ObserveDelivery(rcpt, status string, session []zap.Field) {
	a.observeDelivery(rcpt, status, session)
}
