// Package mailhdr reads the header section of a message for the checks
// that need a field or two of it (DMARC's From, the DKIM signer's list of
// fields).
package mailhdr

import "strings"

// Fields splits a header section into its fields, unfolded (continuation
// lines joined to their field), without line ends.
func Fields(header []byte) []string {
	var fields []string
	for _, line := range strings.Split(string(header), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += line
			continue
		}
		fields = append(fields, line)
	}
	return fields
}
