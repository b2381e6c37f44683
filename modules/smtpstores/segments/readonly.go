package segments

import (
	"fmt"
	"io"
	"strings"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

// ReadOnly is a segment spool opened only to read it, for `caddy smtp
// spool inspect` and `convert`: it takes no lock and writes nothing (a
// torn tail is not truncated, tmp/ is not cleared, no body file is
// deleted), so it can look at the spool of a running Caddy. Records
// appended meanwhile are not seen; a record being appended at the end of
// the last segment looks torn and ends the scan there.
type ReadOnly struct{ s *Store }

// OpenReadOnly reads the segments of the spool dir.
func OpenReadOnly(dir string) (*ReadOnly, error) {
	seqs, err := segmentSeqs(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, index: make(map[string]*segEntry)}
	_, bad := s.readAll(seqs)
	if len(bad) > 0 {
		s.loadErr = fmt.Errorf("damaged spool segments (messages after the damage are not seen): %s", strings.Join(bad, "; "))
	}
	return &ReadOnly{s: s}, nil
}

// Load returns the messages, oldest first, as queue.Store.Load does.
func (r *ReadOnly) Load() ([]*queue.Message, error) { return r.s.Load() }

// OpenBody opens the stored body of a message.
func (r *ReadOnly) OpenBody(id string) (io.ReadCloser, error) { return r.s.OpenBody(id) }

// LoadHeldDomains returns the held recipient domains.
func (r *ReadOnly) LoadHeldDomains() ([]string, error) { return spoolfs.LoadHeldDomains(r.s.dir) }
