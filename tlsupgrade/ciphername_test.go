package tlsupgrade

import (
	"crypto/tls"
	"testing"
)

// TestCipherName: the cached names are crypto/tls's, for every suite it
// knows (secure or not) and for one it does not.
func TestCipherName(t *testing.T) {
	ids := []uint16{0x1301, 0xfefe}
	for _, list := range [][]*tls.CipherSuite{tls.CipherSuites(), tls.InsecureCipherSuites()} {
		for _, c := range list {
			ids = append(ids, c.ID)
		}
	}
	for _, id := range ids {
		if got, want := CipherName(id), tls.CipherSuiteName(id); got != want {
			t.Errorf("CipherName(0x%04x) = %q, want %q", id, got, want)
		}
	}
}

func BenchmarkCipherName(b *testing.B) {
	for b.Loop() {
		CipherName(tls.TLS_AES_128_GCM_SHA256)
	}
}
