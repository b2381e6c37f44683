package files

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

// ReadOnly is a files spool opened only to read it, for `caddy smtp spool
// inspect` and `convert`: it takes no lock and writes nothing (bodies
// without an envelope and unreadable envelopes stay where they are), so
// it can look at the spool of a running Caddy.
type ReadOnly struct{ s *Store }

// OpenReadOnly opens the files spool dir for reading.
func OpenReadOnly(dir string) (*ReadOnly, error) {
	if st, err := os.Stat(filepath.Join(dir, "msg")); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%s is not a files spool: no msg/ directory", dir)
	}
	return &ReadOnly{s: &Store{dir: dir}}, nil
}

// Load returns the messages, oldest first.
func (r *ReadOnly) Load() ([]*queue.Message, error) {
	msgs, err := r.s.load(true)
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].Arrived.Before(msgs[j].Arrived) })
	return msgs, err
}

// OpenBody opens the stored body of a message.
func (r *ReadOnly) OpenBody(id string) (io.ReadCloser, error) { return r.s.OpenBody(id) }

// LoadHeldDomains returns the held recipient domains.
func (r *ReadOnly) LoadHeldDomains() ([]string, error) { return spoolfs.LoadHeldDomains(r.s.dir) }
