package dsn

import "strings"

// ShouldNotify reports whether a DSN with the given action is wanted by a
// recipient whose RCPT command carried the RFC 3461 NOTIFY values notify
// ("NEVER", or any of "SUCCESS", "FAILURE", "DELAY"; case-insensitive).
//
//	NOTIFY            failed  delayed  delivered, relayed, expanded
//	(absent)          yes     yes      no
//	NEVER             no      no       no
//	listed values     FAILURE DELAY    SUCCESS
//
// Without NOTIFY, RFC 3461 section 4.1 lets the MTA act as if either
// FAILURE or FAILURE,DELAY had been given; we choose FAILURE,DELAY so that
// senders learn of long delays (a caller that wants the narrower reading
// passes []string{"FAILURE"} for an absent NOTIFY). NEVER wins over
// anything listed with it. An unknown action is never notified.
func ShouldNotify(notify []string, action Action) bool {
	if len(notify) == 0 {
		return action == Failed || action == Delayed
	}
	want := ""
	switch action {
	case Failed:
		want = "FAILURE"
	case Delayed:
		want = "DELAY"
	case Delivered, Relayed, Expanded:
		want = "SUCCESS"
	default:
		return false
	}
	found := false
	for _, n := range notify {
		n = strings.TrimSpace(n)
		if strings.EqualFold(n, "NEVER") {
			return false
		}
		if strings.EqualFold(n, want) {
			found = true
		}
	}
	return found
}
