package dkimsign

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// A domain's signing keys live in Caddy storage, never in the config:
//
//	smtp/dkim/<domain>/state.json    which key set signs, which is next, which are retired
//	smtp/dkim/<domain>/<selector>.pem one private key (PKCS #8)
//
// A key set is one key per algorithm, named by the day it was made:
// selector "s20261203r" for RSA-2048 and "s20261203e" for Ed25519 (RFC
// 8463), so that both signatures go on every message.

// Algorithms: the selector suffix and what it means.
const (
	AlgRSA     = "rsa"
	AlgEd25519 = "ed25519"
)

var algSuffix = map[string]string{AlgRSA: "r", AlgEd25519: "e"}

// KeySet is one generation of keys.
type KeySet struct {
	// Base is the selectors' common part, e.g. "s20261203".
	Base string `json:"base"`
	// Algorithms are the key types of the set.
	Algorithms []string `json:"algorithms"`
	// Created is when the set was made.
	Created time.Time `json:"created"`
	// RetireAt is, for a retired set, when its keys are deleted (its
	// records may be removed from DNS then).
	RetireAt time.Time `json:"retire_at,omitzero"`
}

// Selector returns the selector of the set's key of an algorithm.
func (k KeySet) Selector(alg string) string { return k.Base + algSuffix[alg] }

// State is a domain's keys.
type State struct {
	// Current signs.
	Current KeySet `json:"current"`
	// Next, after a rotation, waits until its records are seen in DNS;
	// then it becomes Current.
	Next *KeySet `json:"next,omitempty"`
	// Retired sets were current before; their records stay published until
	// RetireAt, for messages still on their way.
	Retired []KeySet `json:"retired,omitempty"`
}

func stateKey(domain string) string { return "smtp/dkim/" + domain + "/state.json" }
func keyKey(domain, selector string) string {
	return "smtp/dkim/" + domain + "/" + selector + ".pem"
}
func lockName(domain string) string { return "smtp_dkim_" + domain }

// LoadState returns the stored state of a domain; nil when it has none.
func LoadState(ctx context.Context, st certmagic.Storage, domain string) (*State, error) {
	raw, err := st.Load(ctx, stateKey(domain))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", stateKey(domain), err)
	}
	return &s, nil
}

func saveState(ctx context.Context, st certmagic.Storage, domain string, s *State) error {
	raw, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return err
	}
	return st.Store(ctx, stateKey(domain), raw)
}

// update changes a domain's state under the storage lock, so that nodes
// sharing the storage do not undo each other's changes. change gets the
// stored state (nil if none) and returns the new one, or nil to leave it.
func update(ctx context.Context, st certmagic.Storage, domain string, change func(*State) (*State, error)) (*State, error) {
	if err := st.Lock(ctx, lockName(domain)); err != nil {
		return nil, fmt.Errorf("locking the DKIM keys of %s: %w", domain, err)
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(ctx), lockName(domain)) }()
	old, err := LoadState(ctx, st, domain)
	if err != nil {
		return nil, err
	}
	s, err := change(old)
	if err != nil || s == nil {
		return old, err
	}
	return s, saveState(ctx, st, domain, s)
}

// newKeySet makes and stores the keys of a new set, named by today's
// date (with a counter when that base exists already).
func newKeySet(ctx context.Context, st certmagic.Storage, domain string, algs []string, now time.Time, taken func(string) bool) (KeySet, error) {
	base := "s" + now.UTC().Format("20060102")
	for i := 2; taken(base); i++ {
		base = fmt.Sprintf("s%s%d", now.UTC().Format("20060102"), i)
	}
	set := KeySet{Base: base, Algorithms: algs, Created: now.UTC()}
	for _, alg := range algs {
		var key crypto.Signer
		var err error
		switch alg {
		case AlgRSA:
			key, err = rsa.GenerateKey(rand.Reader, 2048)
		case AlgEd25519:
			_, key, err = ed25519.GenerateKey(rand.Reader)
		default:
			err = fmt.Errorf("unknown algorithm %q", alg)
		}
		if err != nil {
			return KeySet{}, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return KeySet{}, err
		}
		if err := st.Store(ctx, keyKey(domain, set.Selector(alg)), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
			return KeySet{}, err
		}
	}
	return set, nil
}

// taken reports whether a state uses a base.
func (s *State) taken(base string) bool {
	if s == nil {
		return false
	}
	if s.Current.Base == base || s.Next != nil && s.Next.Base == base {
		return true
	}
	for _, r := range s.Retired {
		if r.Base == base {
			return true
		}
	}
	return false
}

// loadKey reads one private key.
func loadKey(ctx context.Context, st certmagic.Storage, domain, selector string) (crypto.Signer, error) {
	raw, err := st.Load(ctx, keyKey(domain, selector))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s: not PEM", keyKey(domain, selector))
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyKey(domain, selector), err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", keyKey(domain, selector))
	}
	return signer, nil
}

// Record is a DNS record to publish for a selector.
type Record struct {
	// Domain is the signing domain; Selector the key's selector.
	Domain   string `json:"domain"`
	Selector string `json:"selector"`
	// Name is the record's owner, `<selector>._domainkey.<domain>`.
	Name string `json:"name"`
	// TXT is the key record's text (RFC 6376 3.6.1).
	TXT string `json:"txt"`
	// State is current, next (publish it now: it signs once it is seen)
	// or retired (keep it until RetireAt).
	State    string    `json:"state"`
	RetireAt time.Time `json:"retire_at,omitzero"`
}

// txtRecord is the key record for a public key.
func txtRecord(pub crypto.PublicKey) (string, error) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub), nil
	}
	return "", fmt.Errorf("unsupported key type %T", pub)
}

// Records returns the records to publish for a domain's keys.
func Records(ctx context.Context, st certmagic.Storage, domain string) ([]Record, error) {
	s, err := LoadState(ctx, st, domain)
	if err != nil || s == nil {
		return nil, err
	}
	var out []Record
	add := func(set KeySet, state string) error {
		for _, alg := range set.Algorithms {
			key, err := loadKey(ctx, st, domain, set.Selector(alg))
			if err != nil {
				return err
			}
			txt, err := txtRecord(key.Public())
			if err != nil {
				return err
			}
			sel := set.Selector(alg)
			out = append(out, Record{Domain: domain, Selector: sel, Name: sel + "._domainkey." + domain, TXT: txt, State: state, RetireAt: set.RetireAt})
		}
		return nil
	}
	if err := add(s.Current, "current"); err != nil {
		return nil, err
	}
	if s.Next != nil {
		if err := add(*s.Next, "next"); err != nil {
			return nil, err
		}
	}
	for _, r := range s.Retired {
		if err := add(r, "retired"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Rotate starts a rotation: a new key set becomes Next (made now, signing
// once its records are seen in DNS). A rotation already waiting is kept.
func Rotate(ctx context.Context, st certmagic.Storage, domain string, now time.Time) (*State, error) {
	return update(ctx, st, domain, func(s *State) (*State, error) {
		if s == nil {
			return nil, fmt.Errorf("no DKIM keys for %s: the dkim_sign check makes them when it starts", domain)
		}
		if s.Next != nil {
			return nil, nil
		}
		set, err := newKeySet(ctx, st, domain, s.Current.Algorithms, now, s.taken)
		if err != nil {
			return nil, err
		}
		s.Next = &set
		return s, nil
	})
}

// EnsureKeys makes a domain's first key set, of the given algorithms, if
// it has none, and returns its state.
func EnsureKeys(ctx context.Context, st certmagic.Storage, domain string, algs []string, now time.Time) (state *State, made bool, err error) {
	state, err = update(ctx, st, domain, func(old *State) (*State, error) {
		if old != nil {
			return nil, nil
		}
		set, err := newKeySet(ctx, st, domain, algs, now, func(string) bool { return false })
		if err != nil {
			return nil, err
		}
		made = true
		return &State{Current: set}, nil
	})
	return state, made, err
}

// Domains returns the domains that have keys in the storage.
func Domains(ctx context.Context, st certmagic.Storage) ([]string, error) {
	keys, err := st.List(ctx, "smtp/dkim", false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, k := range keys {
		d := k[strings.LastIndexByte(k, '/')+1:]
		if s, err := LoadState(ctx, st, d); err == nil && s != nil {
			out = append(out, d)
		}
	}
	return out, nil
}
