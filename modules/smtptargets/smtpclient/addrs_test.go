package smtpclient

import (
	"net"
	"testing"
)

func TestInterleave(t *testing.T) {
	var ips []net.IP
	for _, s := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1", "2001:db8::2"} {
		ips = append(ips, net.ParseIP(s))
	}
	got := Interleave(ips)
	want := []string{"2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2", "192.0.2.3"}
	for i, w := range want {
		if got[i].String() != w {
			t.Fatalf("Interleave = %v, want %v", got, want)
		}
	}
}

func TestParseSources(t *testing.T) {
	if _, err := ParseSources([]string{"192.0.2.1", "192.0.2.2"}); err == nil {
		t.Error("two IPv4 sources accepted")
	}
	if _, err := ParseSources([]string{"mail.example"}); err == nil {
		t.Error("a name accepted")
	}
	s, err := ParseSources([]string{"192.0.2.1", "2001:db8::1"})
	if err != nil || s.v4.String() != "192.0.2.1" || s.v6.String() != "2001:db8::1" {
		t.Errorf("%+v %v", s, err)
	}
}
