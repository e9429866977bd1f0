package githubapp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/githubtest"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/githubapp"
	"github.com/credproxy/credproxy/lease/leasetest"
)

const (
	appID = 4242
	inst  = 777
)

type env struct {
	gh    *githubtest.Server
	clock *leasetest.Clock
	cfg   githubapp.Config
}

func newEnv(t *testing.T, ttl time.Duration) *env {
	t.Helper()
	clock := leasetest.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	key := githubtest.Key(t)
	gh := githubtest.Start(t, clock, appID, inst, key, ttl)
	return &env{gh: gh, clock: clock, cfg: githubapp.Config{
		AppID: appID, InstallationID: inst, BaseURL: gh.URL, CAFile: gh.CAFile, Clock: clock,
		PrivateKeyFile: githubtest.WriteKey(t, t.TempDir(), "app.pem", key, true),
	}}
}

func (e *env) source(t *testing.T) *githubapp.Source {
	t.Helper()
	s, err := githubapp.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAcquireMintsAVerifiedTokenAndRevokeDeletesIt(t *testing.T) {
	e := newEnv(t, time.Hour)
	e.cfg.Permissions = map[string]string{"contents": "read", "issues": "write"}
	e.cfg.Repositories = []string{"widgets"}
	s := e.source(t)
	g, err := s.Acquire(context.Background(), lease.Request{Credential: "gh", TTL: 15 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.gh.Rejections(); len(r) != 0 {
		t.Fatalf("the fake GitHub rejected the app JWT: %v", r)
	}
	toks := e.gh.Tokens()
	if len(toks) != 1 || g.Value != toks[0].Value || g.Data["token"] != g.Value {
		t.Fatalf("grant value %q, data %v; want the one issued token %v", g.Value, g.Data, toks)
	}
	if g.TTL != time.Hour || g.Renewable {
		t.Errorf("TTL %v renewable %v; want 1h (to expires_at) and not renewable", g.TTL, g.Renewable)
	}
	// Data holds only secrets: every value in it is masked in responses,
	// and a timestamp there would be masked wherever it appeared.
	if len(g.Data) != 1 {
		t.Errorf("data has %d fields, want only token", len(g.Data))
	}
	if want := "@2026-12-01T11:00:00Z"; !strings.HasSuffix(g.SourceLeaseID, want) {
		t.Errorf("SourceLeaseID %q, want it to end %q", g.SourceLeaseID, want)
	}
	if g.SourceLeaseID == "" || strings.Contains(g.SourceLeaseID, g.Value) {
		t.Errorf("SourceLeaseID %q: want an id that is not the token", g.SourceLeaseID)
	}
	if b := toks[0].Body; b.Permissions["contents"] != "read" || b.Permissions["issues"] != "write" ||
		len(b.Repositories) != 1 || b.Repositories[0] != "widgets" {
		t.Errorf("mint body %+v; want the narrowed permissions and repositories", b)
	}
	if err := s.Revoke(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	if e.gh.Live(g.Value) || e.gh.Deletes() != 1 {
		t.Errorf("after Revoke the token is live=%v, deletes=%d; want revoked by one DELETE", e.gh.Live(g.Value), e.gh.Deletes())
	}
	// Revoking again (a token GitHub no longer accepts) is not an error.
	if err := s.Revoke(context.Background(), g); err != nil {
		t.Errorf("second Revoke: %v", err)
	}
}

func TestJWTTimesFollowTheClock(t *testing.T) {
	e := newEnv(t, time.Hour)
	s := e.source(t)
	if _, err := s.Acquire(context.Background(), lease.Request{}); err != nil {
		t.Fatal(err)
	}
	// Two hours on, the first JWT is long expired: only one signed at the
	// clock's new time passes the fake's iat/exp checks.
	e.clock.Advance(2 * time.Hour)
	if _, err := s.Acquire(context.Background(), lease.Request{}); err != nil {
		t.Fatalf("second mint two hours later: %v", err)
	}
	if j := e.gh.JWTs(); len(j) != 2 || j[0] == j[1] {
		t.Errorf("want two distinct app JWTs, got %d", len(j))
	}
}

func TestRenewIsPermanentlyRefused(t *testing.T) {
	e := newEnv(t, time.Hour)
	_, err := e.source(t).Renew(context.Background(), lease.Grant{Value: "x"}, time.Minute)
	if !errors.Is(err, lease.ErrPermanent) {
		t.Fatalf("Renew: %v, want lease.ErrPermanent", err)
	}
}

func TestPKCS8KeyWorks(t *testing.T) {
	e := newEnv(t, time.Hour)
	e.cfg.PrivateKeyFile = githubtest.WriteKey(t, t.TempDir(), "app8.pem", githubtest.Key(t), false)
	if _, err := e.source(t).Acquire(context.Background(), lease.Request{}); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	e := newEnv(t, time.Hour)
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecFile := filepath.Join(dir, "ec.pem")
	os.WriteFile(ecFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	for name, mut := range map[string]func(*githubapp.Config){
		"EC key":             func(c *githubapp.Config) { c.PrivateKeyFile = ecFile },
		"missing key":        func(c *githubapp.Config) { c.PrivateKeyFile = filepath.Join(dir, "none.pem") },
		"no app id":          func(c *githubapp.Config) { c.AppID = 0 },
		"plain http remote":  func(c *githubapp.Config) { c.BaseURL = "http://github.example.com/api/v3" },
		"missing caFile":     func(c *githubapp.Config) { c.CAFile = ecFile + ".none" },
		"caFile without PEM": func(c *githubapp.Config) { c.CAFile = ecFile },
	} {
		cfg := e.cfg
		mut(&cfg)
		if _, err := githubapp.New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		} else if strings.Contains(err.Error(), "BEGIN") {
			t.Errorf("%s: error quotes the key file: %v", name, err)
		}
	}
}

// Hostile or broken answers from the mint endpoint: each fails with a
// SourceError whose text has neither the JWT nor anything GitHub wrote.
func TestHostileMintAnswers(t *testing.T) {
	for _, tc := range []struct {
		mode    githubtest.Mode
		status  int
		denied  bool
		timeout bool
		want    string
	}{
		{githubtest.RejectEcho, 401, true, false, "HTTP 401"},
		{githubtest.HugeBody, 0, false, false, "larger than"},
		{githubtest.Hang, 0, false, true, "deadline exceeded"},
		{githubtest.NoExpiry, 0, false, false, "no valid expires_at"},
		{githubtest.GarbageExpiry, 0, false, false, "no valid expires_at"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			e := newEnv(t, time.Hour)
			e.cfg.Timeout = 300 * time.Millisecond
			e.gh.SetMode(tc.mode)
			_, err := e.source(t).Acquire(context.Background(), lease.Request{})
			var se *lease.SourceError
			if !errors.As(err, &se) || se.Status != tc.status || errors.Is(err, lease.ErrDenied) != tc.denied ||
				errors.Is(err, context.DeadlineExceeded) != tc.timeout || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Acquire: %v; want a SourceError with status %d, denied %v, timeout %v, text %q",
					err, tc.status, tc.denied, tc.timeout, tc.want)
			}
			jwts := e.gh.JWTs()
			if len(jwts) != 1 || strings.Contains(err.Error(), jwts[0]) || strings.Contains(err.Error(), "JSON web token") ||
				len(err.Error()) > 300 {
				t.Errorf("error text %q quotes GitHub's answer or the JWT", err)
			}
		})
	}
}

func TestTLSIsVerifiedAndRedirectsNotFollowed(t *testing.T) {
	e := newEnv(t, time.Hour)
	e.cfg.CAFile = "" // the fake's certificate is not in the system roots
	if _, err := e.source(t).Acquire(context.Background(), lease.Request{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Acquire without the fake's CA: %v; want a certificate error", err)
	}
	if n := len(e.gh.JWTs()); n != 0 {
		t.Errorf("the JWT reached an unverified server (%d requests)", n)
	}

	var elsewhere int
	other := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere++ }))
	defer other.Close()
	redir := httptest.NewTLSServer(http.RedirectHandler(other.URL+"/steal", http.StatusTemporaryRedirect))
	defer redir.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: redir.Certificate().Raw}), 0o600)
	e.cfg.BaseURL, e.cfg.CAFile = redir.URL, caFile
	_, err := e.source(t).Acquire(context.Background(), lease.Request{})
	var se *lease.SourceError
	if !errors.As(err, &se) || se.Status != http.StatusTemporaryRedirect || elsewhere != 0 {
		t.Fatalf("Acquire against a redirect: %v (redirect target hit %d times); want a 307 error and no request elsewhere", err, elsewhere)
	}
}

// The fake checks the signature: a JWT signed with another app's key is
// refused, so the happy path above proves the real key signed it.
func TestJWTFromAnotherKeyIsRejected(t *testing.T) {
	e := newEnv(t, time.Hour)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.PrivateKeyFile = githubtest.WriteKey(t, t.TempDir(), "other.pem", other, true)
	_, err = e.source(t).Acquire(context.Background(), lease.Request{})
	if !errors.Is(err, lease.ErrDenied) || len(e.gh.Rejections()) != 1 || !strings.Contains(e.gh.Rejections()[0], "signature") {
		t.Fatalf("Acquire with another key: %v, fake's rejections %v; want 401 (denied) for a bad signature", err, e.gh.Rejections())
	}
}
