package smtpclient

import (
	"errors"
	"strings"

	"github.com/miekg/dns"

	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// Describe says in a few words why a connection to a host failed, for the
// queue's last reply and DSNs: no addresses, no DNS servers and no Go
// error chain (those go to the log).
func Describe(err error) string {
	if de, ok := errors.AsType[*tlsupgrade.DialError](err); ok {
		return de.Summary()
	}
	if pe, ok := errors.AsType[*tlsupgrade.PolicyError](err); ok {
		return pe.Summary()
	}
	if re, ok := errors.AsType[*resolver.Error](err); ok {
		return DescribeDNS(re)
	}
	if qe, ok := errors.AsType[*queue.DeliveryError](err); ok {
		return qe.Message
	}
	return "connection error"
}

// DescribeDNS words a failed lookup: "DNS lookup of mx.example.com failed
// (SERVFAIL)".
func DescribeDNS(re *resolver.Error) string {
	why := "no DNS server answered"
	switch {
	case re.NotFound:
		why = "no such record"
	case re.Rcode > 0:
		why = dns.RcodeToString[re.Rcode]
		if why == "" {
			why = "DNS error"
		}
	}
	name := re.Name
	if re.Type != "" && re.Type != "A" && re.Type != "AAAA" {
		name = re.Type + " of " + name
	}
	return "DNS lookup of " + name + " failed (" + why + ")"
}

// Failures gathers the failures of the hosts tried in one delivery attempt
// and words them on one line, hosts that failed alike together:
// "connection refused (mx1.example.com, mx2.example.com); timed out
// (mx3.example.com)".
type Failures struct {
	reasons []string
	hosts   map[string][]string
}

// Add records that host failed with err.
func (f *Failures) Add(host string, err error) {
	why := Describe(err)
	if f.hosts == nil {
		f.hosts = make(map[string][]string)
	}
	if _, ok := f.hosts[why]; !ok {
		f.reasons = append(f.reasons, why)
	}
	if host != "" {
		f.hosts[why] = append(f.hosts[why], host)
	}
}

// maxNamed bounds the host names a reason lists.
const maxNamed = 3

// String lists each reason with the hosts that gave it.
func (f *Failures) String() string {
	var b strings.Builder
	for i, why := range f.reasons {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(why)
		hosts := f.hosts[why]
		if len(hosts) == 0 {
			continue
		}
		b.WriteString(" (")
		b.WriteString(strings.Join(hosts[:min(len(hosts), maxNamed)], ", "))
		if len(hosts) > maxNamed {
			b.WriteString(", ...")
		}
		b.WriteString(")")
	}
	return b.String()
}
