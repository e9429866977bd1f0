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

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	done chan struct{}
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
	var err error
	for range 3 { // a free port can be taken before the server binds it
		s.port = freePort(t)
		if err = s.start(); err == nil {
			return s
		}
	}
	t.Fatalf("oauthtest: start: %v", err)
	return nil
}

// Restart starts the server again on the same port after Stop. It keeps
// its clients and CA; tokens it issued before are gone (it is in-memory).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	var err error
	for range 50 { // the port may linger for a moment after the kill
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("oauthtest: restart on %s: %v", s.Issuer, err)
}

// Stop kills the server and waits for it to exit. Calling it again does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Output returns what the running server has logged so far.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

func (s *Server) start() error {
	ready := filepath.Join(s.dir, "ready-"+randomHex()+".json")
	out := &testutil.SyncBuffer{}
	cmd := exec.Command(s.bin,
		"-addr", "127.0.0.1:"+strconv.Itoa(s.port),
		"-cert", filepath.Join(s.dir, "leaf.pem"), "-key", filepath.Join(s.dir, "leaf-key.pem"),
		"-ready", ready, "-token-ttl", s.tokenTTL.String(),
		"-client", ClientID+":"+s.ClientSecret,
		"-refresh-client", RefreshClientID+":"+s.RefreshClientSecret,
		"-resource", ResourceID+":"+s.ResourceSecret)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	// Wait for the ready file: the server writes it once it is listening.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			return fmt.Errorf("oauthserver exited during startup:\n%s", out.String())
		default:
		}
		b, err := os.ReadFile(ready)
		if err == nil {
			var r struct{ Issuer string }
			if err := json.Unmarshal(b, &r); err != nil {
				_ = cmd.Process.Kill()
				<-done
				return err
			}
			s.mu.Lock()
			s.cmd, s.done, s.out = cmd, done, out
			s.Issuer = r.Issuer
			s.TokenURL, s.IntrospectURL, s.RevokeURL = r.Issuer+"/oauth/token", r.Issuer+"/oauth/introspect", r.Issuer+"/revoke"
			s.mu.Unlock()
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("oauthserver not ready after 30s:\n%s", out.String())
		}
	}
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
