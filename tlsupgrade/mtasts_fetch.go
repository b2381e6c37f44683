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
	// DialContext opens the TCP connection; it is called with the address
	// "mta-sts.<domain>:443". FOR TESTS ONLY: a test points it at a
	// loopback server on another port, since RFC 8461 allows port 443
	// only and the fetcher never dials any other. Default: a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	once   sync.Once
	client *http.Client
}

// httpClient builds the client once.
func (f *MTASTSFetcher) httpClient() *http.Client {
	f.once.Do(func() {
		dial := f.DialContext
		if dial == nil {
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
