package vault

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/vaulttest"
	"github.com/credproxy/credproxy/lease"
)

const kvReadPolicy = `path "secret/data/*" { capabilities = ["read"] }`

func TestAppRoleLoginAndReloginAfterRevokedToken(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.Policy(t, "kv-read", kvReadPolicy)
	roleID, secretID := s.EnableAppRole(t, "agent", 0, 0, "kv-read")
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-approle"})
	c := newClient(t, s, Auth{Method: MethodAppRole, RoleID: roleID,
		SecretIDFile: vaulttest.WriteFile(t, "secret-id", secretID+"\n")})
	src := c.Source("secret/data/openai", "")

	if logins, _ := c.counts(); logins != 0 {
		t.Fatalf("NewClient must not log in: want 0 logins, got %d", logins)
	}
	if g := acquire(t, src); g.Value != "sk-test-approle" {
		t.Fatalf("Acquire via approle: want sk-test-approle, got %q", g.Value)
	}
	acquire(t, src)
	if logins, _ := c.counts(); logins != 1 {
		t.Fatalf("two reads: want 1 (lazy, shared) login, got %d", logins)
	}

	// The token dies behind our back: the 403 triggers one re-login.
	s.RevokeToken(t, c.api.Token())
	if g := acquire(t, src); g.Value != "sk-test-approle" {
		t.Fatalf("Acquire after the token was revoked: want sk-test-approle, got %q", g.Value)
	}
	if logins, _ := c.counts(); logins != 2 {
		t.Fatalf("after a revoked token: want 2 logins, got %d", logins)
	}
}

func TestAppRoleRenewsThenLogsInBeforeMaxTTL(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.Policy(t, "kv-read", kvReadPolicy)
	roleID, secretID := s.EnableAppRole(t, "short", 3*time.Second, 6*time.Second, "kv-read")
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-short"})
	c := newClient(t, s, Auth{Method: MethodAppRole, RoleID: roleID,
		SecretIDFile: vaulttest.WriteFile(t, "secret-id", secretID)})
	src := c.Source("secret/data/openai", "")
	acquire(t, src)
	first := c.api.Token()

	// No calls for longer than the token's max TTL: only the renewer acts.
	time.Sleep(8 * time.Second)
	logins, renewals := c.counts()
	if renewals < 1 || logins < 2 {
		t.Fatalf("after 8s with token TTL 3s, max 6s: want ≥1 renew-self and ≥2 logins, got %d and %d", renewals, logins)
	}
	if c.api.Token() == first {
		t.Fatalf("the token past its max TTL is still in use")
	}
	if g := acquire(t, src); g.Value != "sk-test-short" {
		t.Fatalf("Acquire after re-login: want sk-test-short, got %q", g.Value)
	}
	if l, _ := c.counts(); l != logins {
		t.Fatalf("Acquire with a fresh token logged in again (%d → %d logins)", logins, l)
	}
}

func TestTokenRenewSelf(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.Policy(t, "kv-read", kvReadPolicy)
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-tok"})
	c := newClient(t, s, Auth{Token: s.Token(t, 3*time.Second, "kv-read")})
	src := c.Source("secret/data/openai", "")
	acquire(t, src)

	time.Sleep(5 * time.Second) // past the token's first TTL
	if g := acquire(t, src); g.Value != "sk-test-tok" {
		t.Fatalf("Acquire 5s into a 3s token: want sk-test-tok, got %q", g.Value)
	}
	if logins, renewals := c.counts(); renewals < 2 || logins != 1 {
		t.Fatalf("want ≥2 renew-self and 1 login, got %d and %d", renewals, logins)
	}
}

func TestTokenFileRotated(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.Policy(t, "kv-read", kvReadPolicy)
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-file"})
	oldTok := s.Token(t, 0, "kv-read")
	file := vaulttest.WriteFile(t, "vault-token", oldTok+"\n")
	c := newClient(t, s, Auth{TokenFile: file})
	src := c.Source("secret/data/openai", "")
	acquire(t, src)

	// An agent writes a new token and the old one is revoked.
	if err := os.WriteFile(file, []byte(s.Token(t, 0, "kv-read")), 0o600); err != nil {
		t.Fatal(err)
	}
	s.RevokeToken(t, oldTok)
	if g := acquire(t, src); g.Value != "sk-test-file" {
		t.Fatalf("Acquire after rotation: want sk-test-file, got %q", g.Value)
	}
	if logins, _ := c.counts(); logins != 2 {
		t.Fatalf("want the file re-read once (2 logins), got %d", logins)
	}
}

func TestTokenFromEnv(t *testing.T) {
	s := vaulttest.Start(t)
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-env"})
	t.Setenv("VAULT_TOKEN", s.RootToken)
	c := newClient(t, s, Auth{})
	if g := acquire(t, c.Source("secret/data/openai", "api_key")); g.Value != "sk-test-env" {
		t.Fatalf("token from $VAULT_TOKEN: want sk-test-env, got %q", g.Value)
	}
}

func TestNewClientRejectsIncompleteAuth(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no token", Config{}, "needs token, tokenFile or $VAULT_TOKEN"},
		{"approle without secret id", Config{Auth: Auth{Method: "approle", RoleID: "r"}}, "needs roleID and secretIDFile"},
		{"kubernetes without role", Config{Auth: Auth{Method: "kubernetes"}}, "needs role"},
		{"unknown method", Config{Auth: Auth{Method: "ldap"}}, `unknown auth method "ldap"`},
		{"bad CA file", Config{CAFile: "/nonexistent/ca.pem", Auth: Auth{Token: "x"}}, "caFile /nonexistent/ca.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.cfg)
			if err == nil {
				c.Close()
			}
			mustErr(t, err, tc.want)
		})
	}
}

func TestKubernetesLogin(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.Policy(t, "kv-read", kvReadPolicy)
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-k8s"})
	jwtFile := s.EnableKubernetes(t, "credproxy", "agents", "credproxy", "kv-read")
	c := newClient(t, s, Auth{Method: MethodKubernetes, Role: "credproxy", JWTFile: jwtFile})
	if g := acquire(t, c.Source("secret/data/openai", "")); g.Value != "sk-test-k8s" {
		t.Fatalf("Acquire via kubernetes login: want sk-test-k8s, got %q", g.Value)
	}

	// Same claims, but a token the cluster's TokenReview does not accept:
	// denied, and the JWT is not in the error.
	good, err := os.ReadFile(jwtFile)
	if err != nil {
		t.Fatal(err)
	}
	forged := string(good[:bytes.LastIndexByte(good, '.')]) + ".c2ln"
	bad := vaulttest.WriteFile(t, "bad-token", forged)
	c2 := newClient(t, s, Auth{Method: MethodKubernetes, Role: "credproxy", JWTFile: bad})
	_, err = c2.Source("secret/data/openai", "").Acquire(t.Context(), reqFor())
	if !errors.Is(err, lease.ErrDenied) {
		t.Fatalf("kubernetes login with a rejected JWT: want ErrDenied, got %v", err)
	}
	noValues(t, err, forged[:20], "sk-test-k8s")
	t.Logf("rejected JWT: %v", err)
}

func TestTokenFileMissingIsRetryable(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	c := newClient(t, s, Auth{TokenFile: t.TempDir() + "/not-yet"})
	_, err := c.Source("secret/data/openai", "").Acquire(t.Context(), reqFor())
	if !retryable(err) {
		t.Fatalf("a token file not written yet: want a plain (retryable) error, got %v", err)
	}
	mustErr(t, err, "vault: read secret/data/openai: login: token file")
}
