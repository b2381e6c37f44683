package smtpquarantine

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func testKeys(t *testing.T) keys {
	t.Helper()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	k, err := loadKeys(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	again, err := loadKeys(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if string(again.link) != string(k.link) || string(k.link) == string(k.csrf) {
		t.Fatal("the stored key is not reused, or the link and CSRF keys are the same")
	}
	return k
}

// TestLinkSigning: a signed link verifies until its expiry; a change to
// any field, a link signed by another key, a link for an action we do not
// make and an expired link are refused.
func TestLinkSigning(t *testing.T) {
	k := testKeys(t)
	now := time.Unix(1_800_000_000, 0)
	l := link{ID: "ABCDEFGH23456789", Rcpt: "bob@example.test", Action: linkRelease, Expires: now.Add(time.Hour)}
	good := k.sign(l)
	got, err := k.verify(good, now)
	if err != nil || got.ID != l.ID || got.Rcpt != l.Rcpt || got.Action != l.Action || !got.Expires.Equal(l.Expires) {
		t.Fatalf("verify of a good link: %+v, %v", got, err)
	}
	change := func(name, value string) url.Values {
		v := url.Values{}
		for k, vs := range good {
			v[k] = append([]string(nil), vs...)
		}
		v.Set(name, value)
		return v
	}
	other := testKeys(t)
	otherSigned := other.sign(l)
	for name, v := range map[string]url.Values{
		"other id":        change(paramID, "ZZZZZZZZ23456789"),
		"other recipient": change(paramRcpt, "mallory@example.test"),
		"other action":    change(paramAction, linkAllow),
		"later expiry":    change(paramExpires, "1900000000"),
		"no signature":    change(paramSig, ""),
		"bad signature":   change(paramSig, "!!"),
		"another key":     otherSigned,
	} {
		if _, err := k.verify(v, now); !errors.Is(err, errLinkInvalid) {
			t.Errorf("%s: %v, want errLinkInvalid", name, err)
		}
	}
	if _, err := k.verify(k.sign(link{ID: l.ID, Rcpt: l.Rcpt, Action: "delete", Expires: l.Expires}), now); !errors.Is(err, errLinkInvalid) {
		t.Errorf("a signed link for an action digests do not make: %v", err)
	}
	if _, err := k.verify(good, now.Add(time.Hour)); !errors.Is(err, errLinkExpired) {
		t.Errorf("at its expiry: %v, want errLinkExpired", err)
	}
}

// TestCSRFToken: a user's token is accepted for that user only.
func TestCSRFToken(t *testing.T) {
	k := testKeys(t)
	tok := k.csrfToken("bob@example.test")
	if !k.checkCSRF("bob@example.test", tok) {
		t.Fatal("the user's own token is refused")
	}
	for _, bad := range []string{"", "x", k.csrfToken("carol"), tok + "A"} {
		if k.checkCSRF("bob@example.test", bad) {
			t.Errorf("token %q accepted", bad)
		}
	}
}
