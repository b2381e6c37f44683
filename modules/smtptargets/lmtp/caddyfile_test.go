package lmtp

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		input   string
		want    LMTP
		wantErr string // substring; the error must also name the line
	}{
		{input: `lmtp unix//run/dovecot/lmtp`, want: LMTP{Address: "unix//run/dovecot/lmtp"}},
		{input: "lmtp 127.0.0.1:24 {\n tls off\n connect_timeout 5s\n timeout 1m\n}",
			want: LMTP{Address: "127.0.0.1:24", TLS: "none", ConnectTimeout: caddy.Duration(5 * time.Second), Timeout: caddy.Duration(time.Minute)}},
		{input: "lmtp [::1]:24 {\n tls verify\n ca_file ca.pem\n}", want: LMTP{Address: "[::1]:24", TLS: "verify", CAFile: "ca.pem"}},
		{input: `lmtp`, wantErr: "lmtp 127.0.0.1:24', at Testfile:1"},
		{input: `lmtp 127.0.0.1`, wantErr: "want unix/<path> or host:port, at Testfile:1"},
		{input: `lmtp dovecot:0`, wantErr: `port "0" is not a number from 1 to 65535`},
		{input: `lmtp unix/`, wantErr: "empty socket path"},
		{input: `lmtp unix//a unix//b`, wantErr: "wrong argument count"},
		{input: "lmtp unix//run/lmtp {\n tls required\n}", wantErr: "a unix socket never uses TLS, at Testfile:2"},
		{input: "lmtp 127.0.0.1:24 {\n tls dane\n}", wantErr: "use verify, at Testfile:2"},
		{input: "lmtp 127.0.0.1:24 {\n tls maybe\n}", wantErr: "Testfile:2"},
		{input: "lmtp 127.0.0.1:24 {\n timeout 0s\n}", wantErr: "got '0s', at Testfile:2"},
		{input: "lmtp 127.0.0.1:24 {\n tls none\n tls none\n}", wantErr: "duplicate lmtp option 'tls', at Testfile:3"},
		{input: "lmtp 127.0.0.1:24 {\n\n auth a b\n}", wantErr: "unrecognized lmtp option 'auth', at Testfile:3"},
	} {
		var got LMTP
		err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "Testfile:") {
				t.Errorf("%q: error %v, want one with %q and its line", tc.input, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.input, err)
		case got != tc.want:
			t.Errorf("%q: got %+v, want %+v", tc.input, got, tc.want)
		}
	}
}

func TestProvisionRefuses(t *testing.T) {
	for _, tc := range []struct {
		target  LMTP
		wantErr string
	}{
		{LMTP{}, "lmtp: address \"\": an address is required"},
		{LMTP{Address: "unix//run/lmtp", TLS: "verify"}, "a unix socket never uses TLS"},
		{LMTP{Address: "127.0.0.1:24", TLS: "mta-sts"}, "applies to MX delivery"},
		{LMTP{Address: "127.0.0.1:24", Timeout: -1}, "must not be negative"},
		{LMTP{Address: "127.0.0.1:24", CAFile: "/nonexistent/ca.pem"}, "lmtp: ca_file"},
	} {
		if err := tc.target.Provision(caddy.Context{}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%+v: %v, want an error with %q", tc.target, err, tc.wantErr)
		}
	}
}
