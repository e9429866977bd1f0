package proxy

import (
	"crypto/x509"
)

// Leaf is the parsed CA certificate.
func (ca *CA) Leaf() *x509.Certificate { return ca.cert.Leaf }
