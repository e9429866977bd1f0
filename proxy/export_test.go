package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"time"
)

// MintLeafForTest signs a leaf for test upstream servers with ca.
func MintLeafForTest(ca *CA, hosts ...string) (*tls.Certificate, error) {
	lc := &leafCache{ca: ca, obs: nopObserver{}, now: time.Now}
	return lc.mint(hosts...)
}

// Leaf is the parsed CA certificate.
func (ca *CA) Leaf() *x509.Certificate { return ca.cert.Leaf }
