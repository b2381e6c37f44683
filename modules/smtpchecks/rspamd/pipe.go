package rspamd

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"sync"
	"time"
)

// pipe is the request body: the judge's writes go into a buffer that the
// HTTP client drains. A write waits while limit bytes are waiting, at
// most patience (then the reader is given up on: stall is called), and
// is dropped once the reader has stopped (rspamd answered or failed), so
// that the client's transfer never hangs on rspamd.
type pipe struct {
	mu       sync.Mutex
	changed  *sync.Cond
	pending  bytes.Buffer
	limit    int
	patience time.Duration
	stall    func()
	eof      bool // closeWrite: no more data
	stopped  bool // stopReading: the reader is gone
}

func newPipe(limit int, patience time.Duration, stall func()) *pipe {
	p := &pipe{limit: limit, patience: patience, stall: stall}
	p.changed = sync.NewCond(&p.mu)
	return p
}

// Write never fails: the message goes on to the spool whatever happens
// to the scan.
func (p *pipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped && p.pending.Len() >= p.limit {
		expired := false
		t := time.AfterFunc(p.patience, func() {
			p.mu.Lock()
			expired = true
			p.changed.Broadcast()
			p.mu.Unlock()
		})
		for !p.stopped && !expired && p.pending.Len() >= p.limit {
			p.changed.Wait()
		}
		t.Stop()
		if expired && !p.stopped {
			p.stopped = true
			p.pending = bytes.Buffer{}
			go p.stall()
		}
	}
	if !p.stopped && !p.eof {
		p.pending.Write(b)
		p.changed.Broadcast()
	}
	return len(b), nil
}

// Read is the HTTP client's side.
func (p *pipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.pending.Len() == 0 && !p.eof && !p.stopped {
		p.changed.Wait()
	}
	if p.stopped {
		return 0, io.ErrClosedPipe
	}
	if p.pending.Len() == 0 {
		return 0, io.EOF
	}
	n, _ := p.pending.Read(b)
	p.changed.Broadcast()
	return n, nil
}

// Close is called by the HTTP client when it is done with the body.
func (p *pipe) Close() error {
	p.stopReading()
	return nil
}

func (p *pipe) closeWrite() {
	p.mu.Lock()
	p.eof = true
	p.changed.Broadcast()
	p.mu.Unlock()
}

func (p *pipe) stopReading() {
	p.mu.Lock()
	p.stopped = true
	p.pending = bytes.Buffer{}
	p.changed.Broadcast()
	p.mu.Unlock()
}

// headerLimit bounds how much of the header section is kept for the
// Subject.
const headerLimit = 64 << 10

// headerGrabber keeps the start of the message, up to the end of its
// header section, for the original Subject.
type headerGrabber struct {
	buf  []byte
	full bool
}

func (h *headerGrabber) write(p []byte) {
	if h.full {
		return
	}
	room := headerLimit - len(h.buf)
	if len(p) > room {
		p = p[:room]
	}
	h.buf = append(h.buf, p...)
	if len(h.buf) >= headerLimit || bytes.Contains(h.buf, []byte("\r\n\r\n")) {
		h.full = true
	}
}

// subject returns the message's first Subject field, unfolded ("" if
// none).
func (h *headerGrabber) subject() string {
	head, _, _ := bytes.Cut(h.buf, []byte("\r\n\r\n"))
	r := textproto.NewReader(bufio.NewReader(io.MultiReader(bytes.NewReader(head), bytes.NewReader([]byte("\r\n\r\n")))))
	fields, _ := r.ReadMIMEHeader()
	return fields.Get("Subject")
}
