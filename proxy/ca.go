package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// CA is the local certificate authority that signs MITM leaves. Only its
// certificate is ever served (/ca.pem); the key stays in this process and its
// 0600 file.
type CA struct {
	cert        tls.Certificate // with Leaf set: goproxy and x509 reuse the parsed form
	pem         []byte
	fingerprint string // hex SHA-256 of the DER, part of every leaf cache key
}

// LoadOrCreateCA reads the CA from certFile and keyFile. When both are absent
// it mints an ECDSA P-256 CA and writes them (key mode 0600); when only one
// exists it refuses, since silently replacing half a CA breaks every agent
// that trusts the old one. created reports whether a new CA was written.
func LoadOrCreateCA(certFile, keyFile string) (ca *CA, created bool, err error) {
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	certMissing, keyMissing := errors.Is(certErr, fs.ErrNotExist), errors.Is(keyErr, fs.ErrNotExist)
	switch {
	case certMissing && keyMissing:
		if err := createCA(certFile, keyFile); err != nil {
			return nil, false, err
		}
		created = true
	case certMissing:
		return nil, false, fmt.Errorf("ca: key %s exists but certificate %s does not; restore it or remove both to mint a new CA", keyFile, certFile)
	case keyMissing:
		return nil, false, fmt.Errorf("ca: certificate %s exists but key %s does not; restore it or remove both to mint a new CA", certFile, keyFile)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, false, fmt.Errorf("ca: load %s and %s: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, false, fmt.Errorf("ca: parse %s: %w", certFile, err)
		}
	}
	if !pair.Leaf.IsCA {
		return nil, false, fmt.Errorf("ca: %s is not a CA certificate (basicConstraints CA:FALSE)", certFile)
	}
	sum := sha256.Sum256(pair.Certificate[0])
	return &CA{
		cert:        pair,
		pem:         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pair.Certificate[0]}),
		fingerprint: hex.EncodeToString(sum[:]),
	}, created, nil
}

// PEM returns the CA certificate (never the key) in PEM form.
func (ca *CA) PEM() []byte { return ca.pem }

// Fingerprint is the hex SHA-256 of the CA certificate.
func (ca *CA) Fingerprint() string { return ca.fingerprint }

func createCA(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("ca: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "credproxy local CA (" + host + ")", Organization: []string{"credproxy"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("ca: self-sign: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("ca: marshal key: %w", err)
	}
	for _, dir := range []string{filepath.Dir(certFile), filepath.Dir(keyFile)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("ca: %w", err)
		}
	}
	// O_EXCL: two processes starting at once must not overwrite each other's CA.
	if err := writeExclusive(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeExclusive(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ca: write %s: %w", path, err)
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	return serial, nil
}
