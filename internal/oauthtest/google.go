package oauthtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// CloudPlatformScope is the scope Vertex AI and most Google APIs ask for.
const CloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

// GoogleTokenServer stands in for Google's OAuth 2.0 token endpoint
// (https://oauth2.googleapis.com/token), which cannot be reached from a
// test: it takes the RFC 7523 jwt-bearer grant, verifies the assertion with
// an independent JWT library (golang-jwt, not the x/oauth2 code that signs
// it) against the service account's public key, and issues opaque tokens
// that it alone knows.
type GoogleTokenServer struct {
	*httptest.Server
	TokenURL string // the endpoint; also the audience the JWT must carry
	KeyFile  string // the service account's JSON key, token_uri Google's own
	CAFile   string // PEM of the server's certificate
	Email    string // client_email: the JWT's issuer

	key     *rsa.PrivateKey
	mu      sync.Mutex
	other   *rsa.PublicKey // TrustKey: verifies JWTs without a key id
	issued  map[string]bool
	mints   int
	refused []string
}

// StartGoogleTokenServer generates a service account key and serves its
// token endpoint over HTTPS on 127.0.0.1 until the test ends.
func StartGoogleTokenServer(t testing.TB) *GoogleTokenServer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	g := &GoogleTokenServer{key: key, issued: map[string]bool{},
		Email: "credproxy-test@test-project.iam.gserviceaccount.com"}
	g.Server = httptest.NewTLSServer(http.HandlerFunc(g.token))
	t.Cleanup(g.Close)
	g.TokenURL = g.URL + "/token"
	dir := t.TempDir()
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	sa, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "test-project", "private_key_id": "sk-test-kid-1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": g.Email, "client_id": "100000000000000000001",
		"token_uri": "https://oauth2.googleapis.com/token",
	})
	g.KeyFile = filepath.Join(dir, "service-account.json")
	g.CAFile = filepath.Join(dir, "google-ca.pem")
	if err := os.WriteFile(g.KeyFile, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: g.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *GoogleTokenServer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost || r.URL.Path != "/token" {
		http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
		return
	}
	if err := g.verify(r.PostForm); err != nil {
		g.mu.Lock()
		g.refused = append(g.refused, err.Error())
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": err.Error()})
		return
	}
	tok := "ya29.sk-test-" + randomHex()
	g.mu.Lock()
	g.issued[tok] = true
	g.mints++
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3599})
}

// verify checks the grant as Google documents it: RS256 signed by the
// service account's key, iss its email, aud the token URL, a scope, and a
// lifetime of at most an hour.
func (g *GoogleTokenServer) verify(form map[string][]string) error {
	if v := form["grant_type"]; len(v) != 1 || v[0] != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		return fmt.Errorf("grant_type %v", v)
	}
	a := form["assertion"]
	if len(a) != 1 {
		return fmt.Errorf("no assertion")
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(a[0], claims, func(tok *jwt.Token) (any, error) {
		switch kid := tok.Header["kid"]; {
		case kid == "sk-test-kid-1":
			return &g.key.PublicKey, nil
		case kid == nil && g.trusted() != nil:
			return g.trusted(), nil
		default:
			return nil, fmt.Errorf("unknown kid %v", kid)
		}
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(g.Email), jwt.WithAudience(g.TokenURL),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil || !tok.Valid {
		return fmt.Errorf("assertion: %v", err)
	}
	if claims["scope"] != CloudPlatformScope {
		return fmt.Errorf("scope %v", claims["scope"])
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if exp == nil || iat == nil || exp.Sub(iat.Time) > time.Hour {
		return fmt.Errorf("lifetime over an hour")
	}
	return nil
}

// TrustKey makes the endpoint accept JWTs without a key id signed by pub
// (a plain RFC 7523 client with a PEM key), issued by Email.
func (g *GoogleTokenServer) TrustKey(pub *rsa.PublicKey) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.other = pub
}

func (g *GoogleTokenServer) trusted() *rsa.PublicKey {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.other
}

// Valid reports whether the endpoint issued token (what an upstream asks).
func (g *GoogleTokenServer) Valid(token string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.issued[token]
}

// Mints is how many tokens the endpoint issued; Refused lists the grants it
// turned down and why.
func (g *GoogleTokenServer) Mints() (int, []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mints, append([]string(nil), g.refused...)
}
