// Package oauthtest runs the real OAuth 2.0 authorization server that
// scripts/services.sh builds from test/oauthserver (zitadel/oidc's OpenID
// provider) over HTTPS on 127.0.0.1, with a test CA, for tests. It never
// skips: a missing binary is a failed test saying how to build it. It knows
// nothing about credproxy's lease or proxy packages.
package oauthtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
)

// EnvBin names the server binary built by scripts/services.sh.
const EnvBin = "CREDPROXY_OAUTH_BIN"

const howTo = "run ./scripts/test.sh, which builds it (or `source scripts/services.sh`)"

// Client ids the server knows; their secrets are random per server.
const (
	ClientID        = "cc-client" // client_credentials
	RefreshClientID = "rt-client" // refresh_token
	ResourceID      = "upstream"  // the resource server: introspection only
)

// Server is one authorization server. Its endpoints are zitadel's defaults.
type Server struct {
	Issuer        string // https://127.0.0.1:<port>
	TokenURL      string
	IntrospectURL string
	RevokeURL     string
	CAFile        string // PEM of the CA that signed the server's certificate
	CA            *x509.CertPool

	ClientSecret, RefreshClientSecret, ResourceSecret string

	tokenTTL time.Duration
	bin, dir string
	port     int
	client   *http.Client

	proc testutil.Daemon
	mu   sync.Mutex // guards the URLs, set by each start
}

// Start runs a server issuing access tokens that live tokenTTL, and stops it
// when the test ends.
func Start(t testing.TB, tokenTTL time.Duration) *Server {
	t.Helper()
	bin := os.Getenv(EnvBin)
	if bin == "" {
		t.Fatalf("oauthtest: $%s is not set: %s", EnvBin, howTo)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("oauthtest: $%s: %v: %s", EnvBin, err, howTo)
	}
	s := &Server{
		bin: bin, dir: t.TempDir(), tokenTTL: tokenTTL,
		ClientSecret:        "sk-test-client-secret-" + randomHex(),
		RefreshClientSecret: "sk-test-rt-client-secret-" + randomHex(),
		ResourceSecret:      "sk-test-resource-secret-" + randomHex(),
	}
	s.writePKI(t)
	s.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CA}}}
	t.Cleanup(s.Stop)
	// A free port can be taken before the server binds it: try another.
	testutil.Retry(t, "oauthtest: start", 3, 0, func() error {
		s.port = freePort(t)
		return s.start()
	})
	return s
}

// Restart starts the server again on the same port after Stop. It keeps
// its clients and CA; tokens it issued before are gone (it is in-memory).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	// The port may linger for a moment after the kill.
	testutil.Retry(t, "oauthtest: restart on "+s.Issuer, 50, 100*time.Millisecond, s.start)
}

// Stop kills the server and waits for it to exit. Calling it again does nothing.
func (s *Server) Stop() { s.proc.Stop() }

// Output returns what the running server has logged so far.
func (s *Server) Output() string { return s.proc.Output() }

func (s *Server) start() error {
	ready := filepath.Join(s.dir, "ready-"+randomHex()+".json")
	cmd := exec.Command(s.bin,
		"-addr", "127.0.0.1:"+strconv.Itoa(s.port),
		"-cert", filepath.Join(s.dir, "leaf.pem"), "-key", filepath.Join(s.dir, "leaf-key.pem"),
		"-ready", ready, "-token-ttl", s.tokenTTL.String(),
		"-client", ClientID+":"+s.ClientSecret,
		"-refresh-client", RefreshClientID+":"+s.RefreshClientSecret,
		"-resource", ResourceID+":"+s.ResourceSecret)
	var issuer string
	// The server writes the ready file once it is listening.
	err := s.proc.Start(cmd, func(exited <-chan struct{}) error {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			select {
			case <-exited:
				return fmt.Errorf("oauthserver exited during startup")
			default:
			}
			if b, err := os.ReadFile(ready); err == nil {
				var r struct{ Issuer string }
				if err := json.Unmarshal(b, &r); err != nil {
					return err
				}
				issuer = r.Issuer
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("oauthserver not ready after 30s")
			}
		}
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.Issuer = issuer
	s.TokenURL, s.IntrospectURL, s.RevokeURL = issuer+"/oauth/token", issuer+"/oauth/introspect", issuer+"/revoke"
	s.mu.Unlock()
	return nil
}

// Stats is what the server counted (its GET /test/stats).
type Stats struct {
	ClientCredentials int `json:"client_credentials"` // tokens minted by client_credentials
	RefreshToken      int `json:"refresh_token"`      // tokens minted by refresh_token
	Revoked           int `json:"revoked"`
	Introspected      int `json:"introspected"`
	ActiveTokens      int `json:"active_tokens"`
}

// Stats fetches the server's counters.
func (s *Server) Stats(t testing.TB) Stats {
	t.Helper()
	var st Stats
	s.getJSON(t, http.MethodGet, "/test/stats", &st)
	return st
}

// SeedRefreshToken has the server issue a refresh token to RefreshClientID,
// standing in for the user's authorization that comes first in real life.
func (s *Server) SeedRefreshToken(t testing.TB) string {
	t.Helper()
	var r struct {
		RefreshToken string `json:"refresh_token"`
	}
	s.getJSON(t, http.MethodPost, "/test/refresh-token", &r)
	return r.RefreshToken
}

func (s *Server) getJSON(t testing.TB, method, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest(method, s.Issuer+path, nil)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("oauthtest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("oauthtest: %s %s: %v", method, path, err)
	}
}

// Introspect asks the server, as the resource server would (RFC 7662),
// whether token is active.
func (s *Server) Introspect(token string) (bool, error) {
	req, _ := http.NewRequest(http.MethodPost, s.IntrospectURL, strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(ResourceID, s.ResourceSecret)
	resp, err := s.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("introspection: HTTP %d: %s", resp.StatusCode, b)
	}
	var r struct {
		Active bool `json:"active"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return false, err
	}
	return r.Active, nil
}

// RefreshWith presents refreshToken at the token endpoint as the refresh
// client and returns the HTTP status (200: accepted).
func (s *Server) RefreshWith(refreshToken string) (int, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
	req, _ := http.NewRequest(http.MethodPost, s.TokenURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(RefreshClientID, s.RefreshClientSecret)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// writePKI writes a CA (ca.pem) and a leaf for 127.0.0.1 signed by it.
func (s *Server) writePKI(t testing.TB) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "oauthtest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(leafKey)
	s.CAFile = filepath.Join(s.dir, "ca.pem")
	for name, b := range map[string]*pem.Block{
		"ca.pem":       {Type: "CERTIFICATE", Bytes: caDER},
		"leaf.pem":     {Type: "CERTIFICATE", Bytes: leafDER},
		"leaf-key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(s.dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.CA = x509.NewCertPool()
	s.CA.AddCert(ca)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("oauthtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
