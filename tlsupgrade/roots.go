package tlsupgrade

import (
	"crypto/x509"
	"fmt"
	"os"
)

// LoadRoots returns the system roots plus the certificates of a PEM file,
// for Options.RootCAs; nil (meaning the system roots) when file is empty.
func LoadRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", file)
	}
	return pool, nil
}
