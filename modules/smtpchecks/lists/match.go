package lists

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// hit is the entry that matched, and the list it is in.
type hit struct {
	list  string
	entry Entry
}

// netHit is an entry of kind ip.
type netHit struct {
	prefix netip.Prefix
	hit
}

// index is both lists, ready for lookups. Within a kind the most specific
// entry wins (the longest prefix; an address before its domain; a domain
// before its parents); when the same value is in both lists, the block
// list's entry wins.
type index struct {
	nets  []netHit       // longest prefix first, then block before allow
	names map[string]hit // kind + "\x00" + value
}

// newIndex builds the index of the lists; the entries are normalised.
func newIndex(l Lists) *index {
	x := &index{names: make(map[string]hit)}
	for _, list := range Names { // allow first: block overwrites it
		entries := l.Allow
		if list == Block {
			entries = l.Block
		}
		for _, e := range entries {
			h := hit{list, e}
			if e.Kind != KindIP {
				x.names[e.Kind+"\x00"+e.Value] = h
				continue
			}
			p, err := netip.ParsePrefix(e.Value)
			if err != nil { // a single address
				a, err := netip.ParseAddr(e.Value)
				if err != nil {
					continue // not from Normalize
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			x.nets = append(x.nets, netHit{p, h})
		}
	}
	slices.SortStableFunc(x.nets, func(a, b netHit) int {
		if c := cmp.Compare(b.prefix.Bits(), a.prefix.Bits()); c != 0 {
			return c
		}
		return cmp.Compare(b.list, a.list) // "block" before "allow"
	})
	return x
}

// lookup returns the entry of the kind that matches the transaction.
func (x *index) lookup(kind string, in *smtpapp.CheckInput) (hit, bool) {
	switch kind {
	case KindIP:
		ip, ok := netip.AddrFromSlice(in.ClientIP)
		if !ok {
			return hit{}, false
		}
		ip = ip.Unmap()
		for _, n := range x.nets {
			if n.prefix.Contains(ip) {
				return n.hit, true
			}
		}
	case KindHelo:
		if strings.HasPrefix(in.Helo, "[") {
			if lit, err := normalizeLiteral(in.Helo); err == nil {
				return x.name(kind, lit)
			}
		}
		if in.Helo != "" {
			return x.domain(kind, strings.ToLower(strings.TrimSuffix(in.Helo, ".")))
		}
	case KindSender:
		if in.Sender == "" {
			return x.name(kind, "<>")
		}
		return x.name(kind, strings.ToLower(in.Sender))
	case KindSenderDomain:
		if i := strings.LastIndexByte(in.Sender, '@'); i >= 0 {
			return x.domain(kind, strings.ToLower(strings.TrimSuffix(in.Sender[i+1:], ".")))
		}
	case KindRecipient:
		if h, ok := x.name(kind, strings.ToLower(in.Recipient)); ok {
			return h, true
		}
		return x.domain(kind, in.RecipientDomain)
	}
	return hit{}, false
}

func (x *index) name(kind, v string) (hit, bool) {
	h, ok := x.names[kind+"\x00"+v]
	return h, ok
}

// domain looks up d itself, then ".parent" for each parent of d, nearest
// first: ".example.com" matches a.example.com and b.a.example.com, not
// example.com (as in Postfix access tables).
func (x *index) domain(kind, d string) (hit, bool) {
	if d == "" {
		return hit{}, false
	}
	if h, ok := x.name(kind, d); ok {
		return h, true
	}
	for {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return hit{}, false
		}
		d = d[i+1:]
		if h, ok := x.name(kind, "."+d); ok {
			return h, true
		}
	}
}
