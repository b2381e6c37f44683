package tlsupgrade

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultMTASTSFetchTimeout bounds one policy fetch when
// MTASTSFetcher.Timeout is zero.
const DefaultMTASTSFetchTimeout = 30 * time.Second

// errRedirect is returned for a policy host that answers with a redirect.
var errRedirect = errors.New("redirects are not followed (RFC 8461 section 3.3)")

// MTASTSFetcher fetches MTA-STS policies over HTTPS (RFC 8461 section 3.3):
// GET https://mta-sts.<domain>/.well-known/mta-sts.txt on port 443, with a
// certificate that must verify for mta-sts.<domain>, no redirects followed,
// no HTTP proxy, no HTTP cache, a 200 status and a text/plain body of at most
// 64 KiB within Timeout. Its methods are safe for concurrent use; do not
// change its fields after the first fetch.
type MTASTSFetcher struct {
	// RootCAs are the roots the policy host's certificate must chain to.
	// Default: the system roots. Tests set their own CA.
	RootCAs *x509.CertPool
	// Timeout bounds one fetch, from the connection to the end of the
	// body. Default: DefaultMTASTSFetchTimeout.
	Timeout time.Duration
	// Resolver looks up the addresses of mta-sts.<domain>, so that the
	// policy host is found through the same DNS servers as the MX hosts
	// (the delivery target's resolvers). The connection goes to an
	// address, but SNI and the certificate check stay with the name.
	// Default: the system resolver, inside the net.Dialer.
	Resolver IPResolver
	// DialContext opens the TCP connection; it is called with the address
	// "mta-sts.<domain>:443", or with "<ip>:443" for each address of the
	// host in turn when Resolver is set. FOR TESTS ONLY: a test points it
	// at a loopback server on another port, since RFC 8461 allows port 443
	// only and the fetcher never dials any other. Default: a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	once   sync.Once
	client *http.Client
}

// IPResolver looks up the addresses of a host; *resolver.Resolver
// satisfies it.
type IPResolver interface {
	LookupIP(ctx context.Context, host string) ([]net.IP, error)
}

// ResolvingDialer returns a DialContext function that looks up the host of
// its "host:port" address with r and dials the addresses in turn with dial
// (nil: a net.Dialer), so that an HTTP client finds its server through r
// and not through the system resolver. An IP address is dialled as it is.
func ResolvingDialer(r IPResolver, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if net.ParseIP(host) != nil {
			return dial(ctx, network, addr)
		}
		ips, err := r.LookupIP(ctx, host)
		if err != nil {
			return nil, err
		}
		var errs []error
		for _, ip := range ips {
			c, err := dial(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return nil, fmt.Errorf("%s has no address", host)
		}
		return nil, errors.Join(errs...)
	}
}

// httpClient builds the client once.
func (f *MTASTSFetcher) httpClient() *http.Client {
	f.once.Do(func() {
		dial := f.DialContext
		if f.Resolver != nil {
			dial = ResolvingDialer(f.Resolver, dial)
		} else if dial == nil {
			dial = (&net.Dialer{}).DialContext
		}
		timeout := f.Timeout
		if timeout <= 0 {
			timeout = DefaultMTASTSFetchTimeout
		}
		f.client = &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				DialContext:         dial,
				TLSClientConfig:     &tls.Config{RootCAs: f.RootCAs, MinVersion: tls.VersionTLS12},
				TLSHandshakeTimeout: timeout,
				// Policies are fetched rarely: no idle connections
				// to keep (nor goroutines behind them).
				DisableKeepAlives: true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect },
			Timeout:       timeout,
		}
	})
	return f.client
}

// PolicyURL returns the URL of the policy of domain.
func PolicyURL(domain string) string {
	return "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
}

// Fetch gets and parses the policy of domain (a name in A-label form; case
// and a trailing dot do not matter). The error is a *PolicyError with the
// RFC 8460 result type of the failure: "sts-webpki-invalid" when the policy
// host's certificate did not verify, "sts-policy-invalid" when the policy did
// not parse, "sts-policy-fetch-error" for everything else.
func (f *MTASTSFetcher) Fetch(ctx context.Context, domain string) (*MTASTSPolicy, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if !isDomain(domain) {
		return nil, &PolicyError{ResultType: ResultSTSPolicyFetchError, Err: fmt.Errorf("bad domain name %q", domain)}
	}
	body, err := f.get(ctx, PolicyURL(domain))
	if err != nil {
		rt := ResultSTSPolicyFetchError
		if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
			rt = ResultSTSWebPKIInvalid
		}
		return nil, &PolicyError{ResultType: rt, Err: err}
	}
	p, err := ParseMTASTSPolicy(body)
	if err != nil {
		return nil, &PolicyError{ResultType: ResultSTSPolicyInvalid, Err: err}
	}
	return p, nil
}

// get fetches url and returns its body.
func (f *MTASTSFetcher) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %s", url, resp.Status)
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("GET %s: content type %q, want text/plain", url, ct)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMTASTSPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if len(body) > maxMTASTSPolicySize {
		return nil, fmt.Errorf("GET %s: policy larger than %d bytes", url, maxMTASTSPolicySize)
	}
	return body, nil
}
