package main

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Why a bundle: SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and
// GIT_SSL_CAINFO replace a client's trust store rather than add to it. Pointed
// at credproxy's CA alone, they break every host credproxy tunnels (no rule,
// the real certificate), so they point at the system roots plus the CA.

// systemCertFiles and systemCertDirs are where crypto/x509 looks on Linux
// (root_linux.go); the first file found wins, every directory is read.
var (
	systemCertFiles = []string{
		"/etc/ssl/certs/ca-certificates.crt",                // Debian/Ubuntu/Gentoo etc.
		"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora/RHEL 6
		"/etc/ssl/ca-bundle.pem",                            // OpenSUSE
		"/etc/pki/tls/cacert.pem",                           // OpenELEC
		"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS/RHEL 7
		"/etc/ssl/cert.pem",                                 // Alpine Linux
	}
	systemCertDirs = []string{"/etc/ssl/certs", "/etc/pki/tls/certs"}
)

// bundleName is the bundle's file name, beside the CA certificate.
const bundleName = "credproxy-ca-bundle.pem"

func bundlePath(caCert string) string { return filepath.Join(filepath.Dir(caCert), bundleName) }

// systemRootsPEM returns the system roots as PEM, read as Go reads them on
// Linux: $SSL_CERT_FILE or the first file of systemCertFiles, then the
// directories of $SSL_CERT_DIR. The default directories are read only when no
// file was found, since they hold the same certificates as that file.
func systemRootsPEM() ([]byte, error) {
	files := systemCertFiles
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		files = []string{f}
	}
	var out bytes.Buffer
	seen := map[string]bool{}
	found := false
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("system roots: %w", err)
		}
		appendCerts(&out, seen, data)
		found = true
		break
	}
	dirs := []string(nil)
	if d := os.Getenv("SSL_CERT_DIR"); d != "" {
		dirs = strings.Split(d, ":")
	} else if !found {
		dirs = systemCertDirs
	}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // as Go does: a missing directory is no error
		}
		for _, e := range entries {
			if data, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
				appendCerts(&out, seen, data)
			}
		}
	}
	if out.Len() == 0 {
		return nil, errors.New("system roots: no certificates found (set SSL_CERT_FILE for credproxy to a PEM bundle)")
	}
	return out.Bytes(), nil
}

// appendCerts writes each CERTIFICATE block of data not yet seen to out.
func appendCerts(out *bytes.Buffer, seen map[string]bool, data []byte) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return
		}
		if b.Type != "CERTIFICATE" || seen[string(b.Bytes)] {
			continue
		}
		seen[string(b.Bytes)] = true
		_ = pem.Encode(out, &pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
	}
}

// ensureBundle writes the system roots plus the CA certificate in caCert to
// the bundle beside it, when its content differs, and returns its path.
func ensureBundle(caCert string) (string, error) {
	ca, err := os.ReadFile(caCert)
	if err != nil {
		return "", fmt.Errorf("bundle: %w", err)
	}
	roots, err := systemRootsPEM()
	if err != nil {
		return "", fmt.Errorf("bundle: %w", err)
	}
	data := append(append(roots, "# credproxy CA\n"...), ca...)
	path := bundlePath(caCert)
	if err := writeIfChanged(path, data, 0o644); err != nil {
		return "", fmt.Errorf("bundle: %w", err)
	}
	return path, nil
}

// writeIfChanged replaces path with data unless it already holds exactly that.
// The write goes to a temporary file renamed over path, so a client reading
// the file never sees half of it.
func writeIfChanged(path string, data []byte, mode fs.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
