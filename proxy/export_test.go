package proxy

import (
	"crypto/x509"
)

// Leaf is the parsed CA certificate.
func (ca *CA) Leaf() *x509.Certificate { return ca.cert.Leaf }

// ProblemKind gives the title and status of the refusal kind whose RFC 9457
// type is typeURI, and whether there is one.
func ProblemKind(typeURI string) (title string, status int, ok bool) {
	for _, k := range problems {
		if k.typeURI() == typeURI {
			return k.title, k.status, true
		}
	}
	return "", 0, false
}
