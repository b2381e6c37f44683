package smtpquarantine

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"time"

	"github.com/caddyserver/certmagic"
)

// keyStorage is where the secret behind the digest links and the CSRF
// tokens lives in Caddy storage: 32 random bytes, made by the first
// handler that finds none, never in the config. Gateways sharing the
// storage share it, so any of them verifies a link another one mailed.
// Deleting it voids every link mailed so far.
const keyStorage = "smtp/quarantine/signing.key"

// keys are the secrets derived from the stored one, one per use.
type keys struct {
	link []byte // digest links
	csrf []byte // form tokens of the pages
}

// loadKeys reads the stored key, making it under the storage lock when
// there is none yet.
func loadKeys(ctx context.Context, st certmagic.Storage) (keys, error) {
	secret, err := st.Load(ctx, keyStorage)
	if errors.Is(err, fs.ErrNotExist) {
		secret, err = makeKey(ctx, st)
	}
	if err != nil {
		return keys{}, err
	}
	if len(secret) < 32 {
		return keys{}, fmt.Errorf("%s: %d bytes, want at least 32 (delete it to make a new one)", keyStorage, len(secret))
	}
	return keys{link: derive(secret, "digest link"), csrf: derive(secret, "csrf token")}, nil
}

// makeKey stores a new key unless another process did meanwhile.
func makeKey(ctx context.Context, st certmagic.Storage) ([]byte, error) {
	if err := st.Lock(ctx, keyStorage); err != nil {
		return nil, err
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(ctx), keyStorage) }()
	secret, err := st.Load(ctx, keyStorage)
	if !errors.Is(err, fs.ErrNotExist) {
		return secret, err
	}
	secret = make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return secret, st.Store(ctx, keyStorage, secret)
}

// derive makes the key of one use from the secret.
func derive(secret []byte, use string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(use))
	return m.Sum(nil)
}

// mac is HMAC-SHA256 over the fields, each ended by a NUL byte (no field
// holds one: addresses, IDs and numbers cannot).
func mac(key []byte, fields ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, f := range fields {
		m.Write([]byte(f))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// csrfToken is the form token of a user: the POST buttons of the pages
// carry it, and a POST without the token of the signed-in user is refused.
// It is bound to the user (not to a session: basic_auth has none), so a
// page of another site cannot know it.
func (k keys) csrfToken(user string) string {
	return base64.RawURLEncoding.EncodeToString(mac(k.csrf, "csrf", user))
}

// checkCSRF reports whether token is the user's.
func (k keys) checkCSRF(user, token string) bool {
	got, err := base64.RawURLEncoding.DecodeString(token)
	return err == nil && hmac.Equal(got, mac(k.csrf, "csrf", user))
}

// Actions of a digest link.
const (
	linkRelease = "release"
	linkAllow   = "allow-sender"
)

// link is what a digest link authorizes: an action on a message, for one
// of its recipients, until an expiry.
type link struct {
	ID      string
	Rcpt    string
	Action  string
	Expires time.Time
}

// Query parameters of a link.
const (
	paramAction  = "a"
	paramID      = "id"
	paramRcpt    = "r"
	paramExpires = "e"
	paramSig     = "s"
)

// sign returns the link's query: its fields and their HMAC-SHA256.
func (k keys) sign(l link) url.Values {
	exp := strconv.FormatInt(l.Expires.Unix(), 10)
	return url.Values{
		paramAction: {l.Action}, paramID: {l.ID}, paramRcpt: {l.Rcpt}, paramExpires: {exp},
		paramSig: {base64.RawURLEncoding.EncodeToString(mac(k.link, "link", l.ID, l.Rcpt, l.Action, exp))},
	}
}

// Why a link is refused.
var (
	errLinkInvalid = errors.New("this link is not valid: it was changed or was not made by this quarantine")
	errLinkExpired = errors.New("this link has expired")
)

// verify checks a link's query at now: errLinkInvalid when a field or the
// signature was changed, errLinkExpired after its expiry.
func (k keys) verify(v url.Values, now time.Time) (link, error) {
	l := link{ID: v.Get(paramID), Rcpt: v.Get(paramRcpt), Action: v.Get(paramAction)}
	exp := v.Get(paramExpires)
	sig, err := base64.RawURLEncoding.DecodeString(v.Get(paramSig))
	if err != nil || !hmac.Equal(sig, mac(k.link, "link", l.ID, l.Rcpt, l.Action, exp)) {
		return l, errLinkInvalid
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || l.Action != linkRelease && l.Action != linkAllow {
		return l, errLinkInvalid // signed by us, but not a link we make
	}
	l.Expires = time.Unix(unix, 0)
	if !now.Before(l.Expires) {
		return l, errLinkExpired
	}
	return l, nil
}
