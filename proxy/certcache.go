package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

const (
	leafLifetime = 7 * 24 * time.Hour
	leafRefresh  = 24 * time.Hour // mint a new leaf when less than this is left
)

// leafCache mints MITM leaf certificates from the CA and keeps a bounded
// number of them. N concurrent cold CONNECTs to one host sign once.
type leafCache struct {
	ca       *CA
	cache    *lru.Cache[string, *tls.Certificate]
	inflight singleflight.Group
	obs      Observer
	now      func() time.Time
}

func newLeafCache(ca *CA, size int, obs Observer) (*leafCache, error) {
	c, err := lru.New[string, *tls.Certificate](size)
	if err != nil {
		return nil, fmt.Errorf("leaf cache: %w", err)
	}
	return &leafCache{ca: ca, cache: c, obs: obs, now: time.Now}, nil
}

// get returns a leaf for host. The key carries the CA fingerprint, so a
// reloaded CA never serves leaves signed by the old one.
func (lc *leafCache) get(host string) (*tls.Certificate, error) {
	key := lc.ca.fingerprint + "|" + host
	if cert, ok := lc.cache.Get(key); ok && lc.now().Add(leafRefresh).Before(cert.Leaf.NotAfter) {
		lc.obs.CertCache(true)
		return cert, nil
	}
	lc.obs.CertCache(false)
	v, err, _ := lc.inflight.Do(key, func() (any, error) {
		cert, err := lc.mint(host)
		if err != nil {
			return nil, err
		}
		lc.cache.Add(key, cert)
		lc.obs.CertCacheSize(lc.cache.Len())
		return cert, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

// mint signs a fresh leaf for host.
func (lc *leafCache) mint(host string) (*tls.Certificate, error) {
	return lc.ca.signLeaf(lc.now(), host)
}

// SignLeaf signs a fresh server certificate for hosts (names or IP
// literals), with a new ECDSA P-256 key, valid for a week or until the CA
// expires. Tests and benchmarks use it for their own upstream servers.
func (ca *CA) SignLeaf(hosts ...string) (*tls.Certificate, error) {
	return ca.signLeaf(time.Now(), hosts...)
}

func (ca *CA) signLeaf(now time.Time, hosts ...string) (*tls.Certificate, error) {
	if len(hosts) == 0 {
		return nil, fmt.Errorf("leaf: no host")
	}
	host := hosts[0]
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("leaf %s: generate key: %w", host, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	caLeaf := ca.cert.Leaf
	notAfter := now.Add(leafLifetime)
	if notAfter.After(caLeaf.NotAfter) {
		notAfter = caLeaf.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"credproxy"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caLeaf, &key.PublicKey, ca.cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("leaf %s: sign: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("leaf %s: parse: %w", host, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Certificate[0]}, PrivateKey: key, Leaf: leaf}, nil
}
