package smtpapp

import "github.com/caddyserver/caddy/v2/modules/caddytls"

// TestPolicyFor returns the tls app's automation policy that lists name,
// nil if none does.
func (a *App) TestPolicyFor(name string) *caddytls.AutomationPolicy {
	if a.tlsApp.Automation == nil {
		return nil
	}
	for _, ap := range a.tlsApp.Automation.Policies {
		for _, s := range ap.Subjects() {
			if s == name {
				return ap
			}
		}
	}
	return nil
}
