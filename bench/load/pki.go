package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"

	"github.com/credproxy/credproxy/proxy"
)

// upstreamPKI is the bench upstream's own CA (not credproxy's): the direct
// client trusts it, and credproxy trusts it through upstream.caFiles.
type upstreamPKI struct {
	caFile string
	pool   *x509.CertPool
	leaf   tls.Certificate
}

// newUpstreamPKI creates a CA in dir with proxy.LoadOrCreateCA and signs a
// leaf for api.bench.test and 127.0.0.1 with it.
func newUpstreamPKI(dir string) (*upstreamPKI, error) {
	certFile, keyFile := filepath.Join(dir, "upstream-ca.pem"), filepath.Join(dir, "upstream-ca-key.pem")
	ca, _, err := proxy.LoadOrCreateCA(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.SignLeaf("api.bench.test", "127.0.0.1")
	if err != nil {
		return nil, fmt.Errorf("upstream leaf: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM())
	return &upstreamPKI{caFile: certFile, pool: pool, leaf: *leaf}, nil
}
