package bench_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
)

// The checks benchmark: the same load, every message DKIM-signed by the
// load tool, into the gateway's plain server and into a second server of
// the same gateway with the authentication checks on (iprev, dnsbl, spf,
// dkim, dmarc against a DNS server on loopback, answers cached where the
// checks cache them), so that the difference in CPU per message is what
// the checks cost.

// checksDNS answers what the checks ask about the load: smtpload.test
// (the client's PTR name) is 127.0.0.1, sender.test publishes SPF, DMARC
// and the DKIM key, and nothing is listed in the DNSBL.
type checksDNS struct {
	srv *dns.Server
	txt map[string][]string
}

func startChecksDNS(pub *rsa.PublicKey) (*checksDNS, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	record := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	var txt []string // in strings of at most 255 bytes
	for len(record) > 255 {
		txt, record = append(txt, record[:255]), record[255:]
	}
	txt = append(txt, record)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &checksDNS{txt: map[string][]string{
		"sender.test.":                   {"v=spf1 ip4:127.0.0.1 -all"},
		"_dmarc.sender.test.":            {"v=DMARC1; p=reject"},
		"load._domainkey.sender.test.":   txt,
		"_dmarc.smtpload.test.":          nil,
		"1.0.0.127.dnsbl.bench.test.":    nil,
		"1.0.0.127.in-addr.arpa.":        nil,
		"smtpload.test.":                 nil,
		"load._domainkey.smtpload.test.": nil,
	}}
	d.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.answer)}
	go d.srv.ActivateAndServe()
	return d, nil
}

func (d *checksDNS) addr() string { return d.srv.PacketConn.LocalAddr().String() }

func (d *checksDNS) answer(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 300}
	switch {
	case q.Qtype == dns.TypePTR && name == "1.0.0.127.in-addr.arpa.":
		resp.Answer = append(resp.Answer, &dns.PTR{Hdr: hdr, Ptr: "smtpload.test."})
	case q.Qtype == dns.TypeA && name == "smtpload.test.":
		resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr, A: net.IPv4(127, 0, 0, 1)})
	case q.Qtype == dns.TypeTXT && len(d.txt[name]) > 0:
		resp.Answer = append(resp.Answer, &dns.TXT{Hdr: hdr, Txt: d.txt[name]})
	case strings.HasSuffix(name, "dnsbl.bench.test.") || !strings.HasSuffix(name, ".test.") && !strings.HasSuffix(name, ".arpa."):
		resp.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(resp)
}

// checksServer is the gateway's second server: the plain one's settings
// and routes, with the checks.
func checksServer(listen, sink, resolver string) map[string]any {
	r := []string{resolver}
	return map[string]any{
		"listen":                 []any{map[string]any{"address": listen}},
		"max_connections_per_ip": -1,
		"connection_rate_per_ip": -1,
		"message_rate_per_ip":    -1,
		"recipient_rate_per_ip":  -1,
		"checks": []any{
			map[string]any{"check": "iprev", "resolvers": r},
			map[string]any{"check": "dnsbl", "zones": []any{map[string]any{"zone": "dnsbl.bench.test"}}, "resolvers": r},
			map[string]any{"check": "spf", "resolvers": r},
			map[string]any{"check": "dkim", "resolvers": r},
			map[string]any{"check": "dmarc", "resolvers": r},
		},
		"routes": []any{map[string]any{
			"domains": []string{"example.test"},
			"deliver": map[string]any{"target": "relay", "hosts": []string{sink}, "tls": "opportunistic"},
		}},
	}
}

// loadSigner signs the load's messages as sender.test (selector "load",
// RSA-2048 as most signers use, relaxed/relaxed) over From, To, Date and
// the body: smtpload's messages differ only in Subject and Message-ID, so
// one signature per message shape serves them all and the load tool pays
// the RSA signing a few times, not per message (the gateway still
// verifies every message in full).
func loadSigner(key crypto.Signer) func([]byte) ([]byte, error) {
	var mu sync.Mutex
	// smtpload's body is a function of the message size and the length
	// of the header section (it fills up to the size).
	type shape struct{ size, header int }
	sigs := make(map[shape][]byte)
	return func(msg []byte) ([]byte, error) {
		k := shape{len(msg), bytes.Index(msg, []byte("\r\n\r\n"))}
		mu.Lock()
		sig, ok := sigs[k]
		mu.Unlock()
		if !ok {
			var out bytes.Buffer
			err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{
				Domain: "sender.test", Selector: "load", Signer: key,
				HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
				HeaderKeys: []string{"From", "To", "Date"},
			})
			if err != nil {
				return nil, err
			}
			sig = out.Bytes()[:len(out.Bytes())-len(msg)]
			mu.Lock()
			sigs[k] = sig
			mu.Unlock()
		}
		return append(append(make([]byte, 0, len(sig)+len(msg)), sig...), msg...), nil
	}
}

func newLoadKey() (*rsa.PublicKey, *rsa.PrivateKey) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return &key.PublicKey, key
}

// BenchmarkChecks: signed messages straight into the sink (checks=sink:
// the load tool's and the sink's CPU, signing included), through the plain
// server (checks=off) and through the server with the checks (checks=on),
// in one run. The relay's CPU per message is cpu-ms/msg minus the sink
// row's; the checks' share is (on - off) / (off - sink).
func BenchmarkChecks(b *testing.B) {
	e := gatewayEnv(b)
	for _, size := range []int{4096, 102400} {
		for _, mode := range []string{"sink", "off", "on"} {
			b.Run(fmt.Sprintf("size=%d/checks=%s", size, mode), func(b *testing.B) {
				addr := map[string]string{"sink": e.sink.Addr(), "off": e.gateway, "on": e.checked}[mode]
				benchmarkLoad(b, e, addr, size, e.sign)
			})
		}
	}
}

// TestChecksSmoke: the checked server takes signed load, and the checks
// pass it (a failing SPF, DKIM or DMARC would refuse or tag it).
func TestChecksSmoke(t *testing.T) {
	e := gatewayEnv(t)
	sum, _ := relayWith(t, e.sink, e.checked, 20, 4096, e.sign)
	if sum.Accepted != 20 {
		t.Fatalf("%s", sum)
	}
	got := e.sink.Last()
	for _, want := range []string{"iprev=pass", "spf=pass", "dkim=pass header.d=sender.test", "dmarc=pass header.from=sender.test"} {
		if !strings.Contains(strings.Join(strings.Fields(got), " "), want) {
			t.Errorf("the relayed message lacks %q:\n%.600s", want, got)
		}
	}
}
