package smtpapp

import "bytes"

// FilterAuthResults runs the Authentication-Results filter over msg, fed
// in pieces of chunk bytes, and returns what it passes and how many fields
// it removed.
func FilterAuthResults(msg, authservID string, chunk int) (string, int, error) {
	var out bytes.Buffer
	f := newAuthResultsFilter(&out, authservID)
	for p := []byte(msg); len(p) > 0; {
		n := min(chunk, len(p))
		if _, err := f.Write(p[:n]); err != nil {
			return "", 0, err
		}
		p = p[n:]
	}
	err := f.Flush()
	return out.String(), f.Removed(), err
}

// HeaderBlock exposes headerBlock.
var HeaderBlock = headerBlock
