package rspamd

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// reply is the part of rspamd's /checkv2 answer that we use.
type reply struct {
	Action        string            `json:"action"`
	Score         float64           `json:"score"`
	RequiredScore float64           `json:"required_score"`
	Subject       string            `json:"subject"`
	Symbols       map[string]symbol `json:"symbols"`
	Milter        milterBlock       `json:"milter"`
}

type symbol struct {
	Name  string  `json:"name"`
	Score float64 `json:"score"`
}

// milterBlock is the header changes rspamd asks for. A field to add is
// given as a string, as {"value": ..., "order": ...}, or as a list of
// those; a field to remove maps to the occurrence (0: all of them; we
// always remove all).
type milterBlock struct {
	AddHeaders    map[string]json.RawMessage `json:"add_headers"`
	RemoveHeaders map[string]json.RawMessage `json:"remove_headers"`
}

// summary is the short result for the log line and the admin view:
// "add header, score 7.10/15.00 (RDNS_NONE(1.00), ...)", with the three
// symbols that scored most.
func (rep *reply) summary() string {
	s := fmt.Sprintf("%s, score %.2f/%.2f", rep.Action, rep.Score, rep.RequiredScore)
	var top []string
	for _, sym := range rep.symbols() {
		if len(top) == 3 || sym.Score <= 0 {
			break
		}
		top = append(top, sym.String())
	}
	if len(top) > 0 {
		s += " (" + strings.Join(top, ", ") + ")"
	}
	return s
}

// symbolList formats up to n symbols, highest scores first.
func (rep *reply) symbolList(n int) string {
	syms := rep.symbols()
	if len(syms) > n {
		syms = syms[:n]
	}
	out := make([]string, len(syms))
	for i, s := range syms {
		out[i] = s.String()
	}
	return strings.Join(out, ", ")
}

// symbols returns the symbols by score, highest first, then by name.
func (rep *reply) symbols() []symbol {
	syms := make([]symbol, 0, len(rep.Symbols))
	for name, s := range rep.Symbols {
		if s.Name == "" {
			s.Name = name
		}
		syms = append(syms, s)
	}
	slices.SortFunc(syms, func(a, b symbol) int {
		switch {
		case a.Score > b.Score:
			return -1
		case a.Score < b.Score:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return syms
}

func (s symbol) String() string { return fmt.Sprintf("%s(%.2f)", s.Name, s.Score) }

// changes returns the fields to add and the names to remove, in a stable
// order. Values that are neither strings nor objects with a value are
// ignored.
func (m milterBlock) changes() (add []smtpapp.HeaderField, remove []string) {
	type valued struct {
		Value *string `json:"value"`
	}
	for _, name := range sortedKeys(m.AddHeaders) {
		raw := m.AddHeaders[name]
		var one string
		var obj valued
		var list []valued
		switch {
		case json.Unmarshal(raw, &one) == nil:
			add = append(add, smtpapp.HeaderField{Name: name, Value: one})
		case json.Unmarshal(raw, &obj) == nil:
			list = []valued{obj}
		default:
			_ = json.Unmarshal(raw, &list)
		}
		for _, o := range list {
			if o.Value != nil {
				add = append(add, smtpapp.HeaderField{Name: name, Value: *o.Value})
			}
		}
	}
	return add, sortedKeys(m.RemoveHeaders)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
