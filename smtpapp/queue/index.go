package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"time"
	"unicode/utf8"
)

// Index is what the scheduler needs of a message at rest, so that it can
// keep only this in memory and read the whole envelope back from the
// store (IndexStore) when it delivers, reports or lists the message.
type Index struct {
	ID          string
	Arrived     time.Time
	NextAttempt time.Time
	Held        bool
	Quarantine  *Quarantine
	// Domains are the domains of the pending recipients, sorted, each
	// once.
	Domains []string
	// DSNPending is set while a DSN about some recipient is owed.
	DSNPending bool
}

// IndexStore is implemented by stores that can list their messages'
// Index entries without decoding every envelope, and read one envelope
// back on demand. With such a store the queue keeps only a small entry
// per message at rest; with others (Load) it keeps every Message decoded.
type IndexStore interface {
	Store
	// LoadIndex calls fn for every committed message, in no particular
	// order; the error reports messages it had to skip (as Load's).
	LoadIndex(fn func(Index)) error
	// LoadMessage reads a committed message's envelope and state as last
	// committed or saved; an error wrapping os.ErrNotExist when there is
	// no such message.
	LoadMessage(id string) (*Message, error)
}

// IndexOf returns the Index of a message.
func IndexOf(m *Message) Index {
	x := Index{ID: m.ID, Arrived: m.Arrived, NextAttempt: m.NextAttempt, Held: m.Held, Quarantine: m.Quarantine}
	for _, r := range m.Recipients {
		x.DSNPending = x.DSNPending || r.DSNPending
		if r.Status == Pending {
			x.Domains = append(x.Domains, Domain(r.Addr))
		}
	}
	x.Domains = sortedSet(x.Domains)
	return x
}

func sortedSet(s []string) []string {
	if len(s) < 2 {
		return s
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// ParseIndex reads the Index of a message from its envelope JSON (as
// json.Marshal writes a Message) without decoding the rest: it checks
// that the envelope is well-formed JSON and reads the fields the Index
// needs. Envelopes it does not expect (escaped strings, null, keys in
// another case) go through json.Unmarshal instead, with the same result.
func ParseIndex(env []byte) (Index, error) {
	if x, err := parseIndexFast(env); err == nil {
		return x, nil
	}
	m := new(Message)
	if err := json.Unmarshal(env, m); err != nil {
		return Index{}, err
	}
	return IndexOf(m), nil
}

// errSlow sends an envelope to json.Unmarshal.
var errSlow = errors.New("envelope needs the full decoder")

func parseIndexFast(env []byte) (Index, error) {
	p := &jsonScan{b: env}
	var x Index
	err := p.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "id":
			x.ID, err = p.str()
		case "arrived":
			x.Arrived, err = p.time()
		case "next_attempt":
			x.NextAttempt, err = p.time()
		case "held":
			x.Held, err = p.boolean()
		case "quarantine":
			if !p.null() {
				return errSlow // rare: the full decoder
			}
		case "rcpts":
			x.Domains, x.DSNPending = nil, false
			err = p.array(func() error { return p.recipient(&x) })
		default:
			if foldsTo(key, "id", "arrived", "next_attempt", "held", "quarantine", "rcpts") {
				return errSlow
			}
			err = p.skip()
		}
		return err
	})
	if err != nil {
		return Index{}, err
	}
	if p.ws(); p.i != len(p.b) {
		return Index{}, errSlow
	}
	x.Domains = sortedSet(x.Domains)
	return x, nil
}

// recipient reads one element of "rcpts".
func (p *jsonScan) recipient(x *Index) error {
	var addr, status []byte
	var dsn bool
	err := p.object(func(key []byte) error {
		var err error
		switch string(key) {
		case "addr":
			addr, err = p.raw()
		case "status":
			status, err = p.raw()
		case "dsn_pending":
			dsn, err = p.boolean()
		default:
			if foldsTo(key, "addr", "status", "dsn_pending") {
				return errSlow
			}
			err = p.skip()
		}
		return err
	})
	if err != nil {
		return err
	}
	x.DSNPending = x.DSNPending || dsn
	if Status(status) == Pending {
		x.Domains = append(x.Domains, Domain(string(addr)))
	}
	return nil
}

// foldsTo reports whether key is one of names (all lowercase) in
// another case, which json.Unmarshal would match.
func foldsTo(key []byte, names ...string) bool {
	if !slices.ContainsFunc(key, func(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 0x80 }) {
		return false // lowercase ASCII folds to nothing but itself
	}
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// jsonScan is a small strict JSON reader: it validates what it skips and
// gives up (errSlow) on what the fast path does not decode itself.
type jsonScan struct {
	b     []byte
	i     int
	depth int // of skipped objects and arrays
}

// maxDepth is json.Unmarshal's limit on nesting.
const maxDepth = 10000

func (p *jsonScan) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonScan) peek() byte {
	p.ws()
	if p.i >= len(p.b) {
		return 0
	}
	return p.b[p.i]
}

func (p *jsonScan) expect(c byte) error {
	if p.peek() != c {
		return errSlow
	}
	p.i++
	return nil
}

// object reads an object, calling member for each key with the reader at
// its value.
func (p *jsonScan) object(member func(key []byte) error) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	if p.peek() == '}' {
		p.i++
		return nil
	}
	for {
		key, err := p.raw()
		if err != nil {
			return err
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		if end, err := p.next('}'); end || err != nil {
			return err
		}
	}
}

// array reads an array, calling elem with the reader at each element.
func (p *jsonScan) array(elem func() error) error {
	if err := p.expect('['); err != nil {
		return err
	}
	if p.peek() == ']' {
		p.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		if end, err := p.next(']'); end || err != nil {
			return err
		}
	}
}

// next reads the comma before the next member or element, or the end
// of the object or array.
func (p *jsonScan) next(end byte) (bool, error) {
	switch p.peek() {
	case ',':
		p.i++
		return false, nil
	case end:
		p.i++
		return true, nil
	}
	return false, errSlow
}

// raw reads a string without escapes, of valid UTF-8, and returns its
// bytes (in the envelope).
func (p *jsonScan) raw() ([]byte, error) {
	if err := p.expect('"'); err != nil {
		return nil, err
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !utf8.Valid(s) {
				return nil, errSlow
			}
			return s, nil
		case c == '\\' || c < 0x20:
			return nil, errSlow
		}
		p.i++
	}
	return nil, errSlow
}

func (p *jsonScan) str() (string, error) {
	s, err := p.raw()
	return string(s), err
}

func (p *jsonScan) time() (time.Time, error) {
	s, err := p.raw()
	if err != nil {
		return time.Time{}, err
	}
	var t time.Time
	if err := t.UnmarshalText(s); err != nil {
		return time.Time{}, errSlow
	}
	return t, nil
}

func (p *jsonScan) literal(word string) bool {
	p.ws()
	if bytes.HasPrefix(p.b[p.i:], []byte(word)) {
		p.i += len(word)
		return true
	}
	return false
}

func (p *jsonScan) null() bool { return p.literal("null") }

func (p *jsonScan) boolean() (bool, error) {
	switch {
	case p.literal("true"):
		return true, nil
	case p.literal("false"):
		return false, nil
	}
	return false, errSlow
}

// skip reads and validates any value.
func (p *jsonScan) skip() error {
	switch c := p.peek(); {
	case c == '{' || c == '[':
		if p.depth++; p.depth > maxDepth {
			return errSlow
		}
		defer func() { p.depth-- }()
		if c == '[' {
			return p.array(p.skip)
		}
		return p.object(func([]byte) error { return p.skip() })
	case c == '"':
		return p.skipString()
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case p.literal("true"), p.literal("false"), p.null():
		return nil
	}
	return errSlow
}

// skipString reads a string that may have escapes.
func (p *jsonScan) skipString() error {
	p.i++ // the quote
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(p.b[start : p.i-1]) {
				return errSlow
			}
			return nil
		case c < 0x20:
			return errSlow
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return errSlow
			}
			switch p.b[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(p.b) || !isHex4(p.b[p.i+2:p.i+6]) {
					return errSlow
				}
				p.i += 6
			default:
				return errSlow
			}
			continue
		}
		p.i++
	}
	return errSlow
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// number reads a JSON number.
func (p *jsonScan) number() error {
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return errSlow
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return errSlow
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return errSlow
		}
	}
	return nil
}
