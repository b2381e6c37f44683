package smtpquarantine

import (
	"context"
	"errors"
	"net/url"
	"time"
)

// TriggerDigests runs the digest of every running handler with one as if
// its timer fired at now, and returns how many digests they queued.
func TriggerDigests(ctx context.Context, now time.Time) (int, error) {
	digesters.Lock()
	var hs []*Handler
	for h := range digesters.set {
		hs = append(hs, h)
	}
	digesters.Unlock()
	if len(hs) == 0 {
		return 0, errors.New("no handler with a digest runs")
	}
	total := 0
	for _, h := range hs {
		_, n, err := h.runDigest(ctx, now)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// SignLink returns the query of a digest link signed by a running
// handler's key.
func SignLink(id, rcpt, action string, expires time.Time) url.Values {
	digesters.Lock()
	defer digesters.Unlock()
	for h := range digesters.set {
		return h.keys.sign(link{ID: id, Rcpt: rcpt, Action: action, Expires: expires})
	}
	return nil
}
