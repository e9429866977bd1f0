package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"time"

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
// leaf for api.bench.test and 127.0.0.1 with it. proxy's leaf minting is
// unexported, so this is a small signer of its own.
func newUpstreamPKI(dir string) (*upstreamPKI, error) {
	certFile, keyFile := filepath.Join(dir, "upstream-ca.pem"), filepath.Join(dir, "upstream-ca-key.pem")
	ca, _, err := proxy.LoadOrCreateCA(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("upstream CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("upstream CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "api.bench.test"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"api.bench.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, pair.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("upstream leaf: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM())
	return &upstreamPKI{
		caFile: certFile,
		pool:   pool,
		leaf:   tls.Certificate{Certificate: [][]byte{der, pair.Certificate[0]}, PrivateKey: key},
	}, nil
}
