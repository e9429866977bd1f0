package oauth2_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/internal/oauthtest"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/oauth2"
)

// A Google service-account key mints a token the way Vertex AI callers do:
// the endpoint verifies the JWT with golang-jwt against the account's key.
func TestServiceAccountKeyFile(t *testing.T) {
	g := oauthtest.StartGoogleTokenServer(t)
	src, err := oauth2.New(oauth2.Config{
		Name: "gcp", Grant: oauth2.GrantJWTBearer, KeyFile: g.KeyFile, TokenURL: g.TokenURL,
		Scopes: []string{oauthtest.CloudPlatformScope}, CAFile: g.CAFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	gr, err := src.Acquire(context.Background(), lease.Request{Credential: "vertex"})
	if err != nil {
		_, refused := g.Mints()
		t.Fatalf("acquire: %v (endpoint refused: %v)", err, refused)
	}
	if !g.Valid(gr.Value) || !strings.HasPrefix(gr.Value, "ya29.") {
		t.Errorf("token not one the endpoint issued")
	}
	if gr.TTL <= 0 || gr.Renewable {
		t.Errorf("TTL %v renewable %v; want the token's lifetime, not renewable", gr.TTL, gr.Renewable)
	}
}

// A grant the endpoint refuses (a scope the account may not have) is an
// HTTP 400, denied; the endpoint's error_description is not quoted.
func TestServiceAccountWrongScopeRefused(t *testing.T) {
	g := oauthtest.StartGoogleTokenServer(t)
	src, err := oauth2.New(oauth2.Config{
		Name: "gcp", Grant: oauth2.GrantJWTBearer, KeyFile: g.KeyFile, TokenURL: g.TokenURL,
		Scopes: []string{"https://www.googleapis.com/auth/other"}, CAFile: g.CAFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Acquire(context.Background(), lease.Request{Credential: "vertex"})
	if err == nil || !strings.Contains(err.Error(), "HTTP 400") || !errors.Is(err, lease.ErrDenied) {
		t.Fatalf("acquire with a scope the endpoint refuses: %v; want HTTP 400, denied", err)
	}
	if strings.Contains(err.Error(), "scope") {
		t.Errorf("the endpoint's error_description reached the error: %v", err)
	}
	if m, _ := g.Mints(); m != 0 {
		t.Errorf("%d tokens minted", m)
	}
}

// A plain PEM key signs a JWT issued by clientID (RFC 7523 without Google's
// key file). The endpoint accepts it once it trusts the key; a JWT signed by
// a key it does not know is refused with a signature failure.
func TestPrivateKeyFileSigns(t *testing.T) {
	g := oauthtest.StartGoogleTokenServer(t)
	newSrc := func() (*oauth2.Source, *rsa.PrivateKey) {
		key, _ := rsa.GenerateKey(rand.Reader, 2048)
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		src, err := oauth2.New(oauth2.Config{
			Name: "jwt", Grant: oauth2.GrantJWTBearer, ClientID: g.Email, TokenURL: g.TokenURL,
			PrivateKeyFile: writeFile(t, t.TempDir(), "key.pem", pemKey, 0o600),
			Scopes:         []string{oauthtest.CloudPlatformScope}, CAFile: g.CAFile,
		})
		if err != nil {
			t.Fatal(err)
		}
		return src, key
	}
	good, key := newSrc()
	g.TrustKey(&key.PublicKey)
	gr, err := good.Acquire(context.Background(), lease.Request{Credential: "x"})
	if err != nil || !g.Valid(gr.Value) {
		_, refused := g.Mints()
		t.Fatalf("trusted key: %v (refused: %v)", err, refused)
	}
	bad, _ := newSrc()
	_, err = bad.Acquire(context.Background(), lease.Request{Credential: "x"})
	_, refused := g.Mints()
	if err == nil || len(refused) != 1 || !strings.Contains(refused[0], "verification error") {
		t.Fatalf("a JWT signed by another key: err %v, endpoint refused %v; want a signature failure", err, refused)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("error carries the key: %v", err)
	}
}

// A key file whose token_uri is plain http to a remote host is refused at
// start: the signed grant would cross the network in the clear.
func TestServiceAccountPlainHTTPTokenURIRefused(t *testing.T) {
	key := `{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com","private_key_id":"k",` +
		`"private_key":"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n","token_uri":"http://idp.example.com/token"}`
	_, err := oauth2.New(oauth2.Config{Name: "gcp", Grant: oauth2.GrantJWTBearer,
		KeyFile: writeFile(t, t.TempDir(), "sa.json", key, 0o600)})
	if err == nil || !strings.Contains(err.Error(), "token_uri: must be https") {
		t.Fatalf("New: %v; want the http token_uri refused", err)
	}
}
