package smtpapp

import "sync"

// ForgetTLSRPTProcessState makes this process look like a new one to
// the TLS-RPT persistence: counts are restored again at the next start.
func ForgetTLSRPTProcessState() {
	tlsrptRestore = sync.Once{}
	tlsrptSaved.Lock()
	tlsrptSaved.valid = false
	tlsrptSaved.Unlock()
}
