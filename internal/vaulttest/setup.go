package vaulttest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

func ttlString(d time.Duration) string { return strconv.Itoa(int(d/time.Second)) + "s" }

// Write writes data at path with the root token (a KV v1 secret, a role,
// a config: anything Logical().Write does).
func (s *Server) Write(t testing.TB, path string, data map[string]any) *api.Secret {
	t.Helper()
	sec, err := s.Client.Logical().WriteWithContext(context.Background(), path, data)
	if err != nil {
		t.Fatalf("vaulttest: write %s: %v", path, err)
	}
	return sec
}

// KVPut writes a KV v2 secret (secret/ is KV v2 in dev mode): KVPut(t,
// "secret", "openai", ...) is read back at secret/data/openai.
func (s *Server) KVPut(t testing.TB, mount, path string, data map[string]any) {
	t.Helper()
	if _, err := s.Client.KVv2(mount).Put(context.Background(), path, data); err != nil {
		t.Fatalf("vaulttest: kv put %s/%s: %v", mount, path, err)
	}
}

// EnableKV mounts a KV engine of version 1 or 2 at mount.
func (s *Server) EnableKV(t testing.TB, mount string, version int) {
	t.Helper()
	s.mount(t, mount, &api.MountInput{Type: "kv", Options: map[string]string{"version": strconv.Itoa(version)}})
}

func (s *Server) mount(t testing.TB, mount string, in *api.MountInput) {
	t.Helper()
	ctx := context.Background()
	mounts, err := s.Client.Sys().ListMountsWithContext(ctx)
	if err != nil {
		t.Fatalf("vaulttest: list mounts: %v", err)
	}
	if _, ok := mounts[mount+"/"]; ok {
		return
	}
	if err := s.Client.Sys().MountWithContext(ctx, mount, in); err != nil {
		t.Fatalf("vaulttest: mount %s (%s): %v", mount, in.Type, err)
	}
}

// Policy writes an ACL policy, e.g. Policy(t, "kv-read", `path "secret/data/*" { capabilities = ["read"] }`).
func (s *Server) Policy(t testing.TB, name, hcl string) {
	t.Helper()
	if err := s.Client.Sys().PutPolicyWithContext(context.Background(), name, hcl); err != nil {
		t.Fatalf("vaulttest: policy %s: %v", name, err)
	}
}

// Token creates a renewable token with the given policies (plus default) and
// TTL (0: Vault's default) and returns it.
func (s *Server) Token(t testing.TB, ttl time.Duration, policies ...string) string {
	t.Helper()
	req := &api.TokenCreateRequest{Policies: policies}
	if ttl > 0 {
		req.TTL = ttlString(ttl)
	}
	sec, err := s.Client.Auth().Token().CreateWithContext(context.Background(), req)
	if err != nil {
		t.Fatalf("vaulttest: create token: %v", err)
	}
	return sec.Auth.ClientToken
}

// RevokeToken revokes a token (and, as Vault does, every lease it created).
func (s *Server) RevokeToken(t testing.TB, token string) {
	t.Helper()
	if err := s.Client.Auth().Token().RevokeOrphanWithContext(context.Background(), token); err != nil {
		t.Fatalf("vaulttest: revoke token: %v", err)
	}
}

// EnableAppRole enables approle at approle/ (once) and creates role with the
// given token TTLs (0: Vault's defaults) and policies. It returns the role ID
// and a fresh secret ID.
func (s *Server) EnableAppRole(t testing.TB, role string, tokenTTL, tokenMaxTTL time.Duration, policies ...string) (roleID, secretID string) {
	t.Helper()
	ctx := context.Background()
	auths, err := s.Client.Sys().ListAuthWithContext(ctx)
	if err != nil {
		t.Fatalf("vaulttest: list auth: %v", err)
	}
	if _, ok := auths["approle/"]; !ok {
		if err := s.Client.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			t.Fatalf("vaulttest: enable approle: %v", err)
		}
	}
	cfg := map[string]any{"token_policies": policies}
	if tokenTTL > 0 {
		cfg["token_ttl"] = ttlString(tokenTTL)
	}
	if tokenMaxTTL > 0 {
		cfg["token_max_ttl"] = ttlString(tokenMaxTTL)
	}
	s.Write(t, "auth/approle/role/"+role, cfg)
	sec, err := s.Client.Logical().ReadWithContext(ctx, "auth/approle/role/"+role+"/role-id")
	if err != nil || sec == nil {
		t.Fatalf("vaulttest: read role id of %s: %v", role, err)
	}
	roleID, _ = sec.Data["role_id"].(string)
	sec = s.Write(t, "auth/approle/role/"+role+"/secret-id", nil)
	secretID, _ = sec.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		t.Fatalf("vaulttest: approle %s: empty role or secret id", role)
	}
	return roleID, secretID
}
