package vaulttest

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

func TestServerKVAndRestart(t *testing.T) {
	t.Parallel()
	s := Start(t)
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-1"})
	kv, err := s.Client.KVv2("secret").Get(context.Background(), "openai")
	if err != nil || kv.Data["api_key"] != "sk-test-1" {
		t.Fatalf("kv get: want api_key sk-test-1, got %v (err %v)", kv, err)
	}

	addr := s.Addr
	s.Restart(t)
	if s.Addr != addr {
		t.Fatalf("restart moved the server from %s to %s", addr, s.Addr)
	}
	if _, err := s.Client.KVv2("secret").Get(context.Background(), "openai"); err == nil {
		t.Fatalf("after restart the dev server should be empty, but the secret is still there")
	}
	s.Stop()
	s.Stop() // idempotent
	if _, err := s.Client.Sys().Health(); err == nil {
		t.Fatalf("health after Stop: want an error, got none")
	}
}

func TestPostgresCredentials(t *testing.T) {
	t.Parallel()
	s := Start(t)
	s.EnablePostgres(t, "ro", time.Hour, 2*time.Hour)
	prefix := s.PGUserPrefix("ro")
	if n := PGRoleCount(t, prefix); n != 0 {
		t.Fatalf("before any read: want 0 roles %s*, got %d", prefix, n)
	}
	sec, err := s.Client.Logical().Read("database/creds/ro")
	if err != nil {
		t.Fatalf("read creds: %v", err)
	}
	user, _ := sec.Data["username"].(string)
	pass, _ := sec.Data["password"].(string)
	if err := PGLogin(user, pass); err != nil {
		t.Fatalf("login with the new credentials: %v", err)
	}
	if err := PGLogin(user, "wrong"); err == nil {
		t.Fatalf("login with a wrong password: want an error, got none")
	}
	if n := PGRoleCount(t, prefix); n != 1 {
		t.Fatalf("after one read: want 1 role %s*, got %d", prefix, n)
	}
	if err := s.Client.Sys().RevokeWithOptions(&api.RevokeOptions{LeaseID: sec.LeaseID, Sync: true}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if n := PGRoleCount(t, prefix); n != 0 {
		t.Fatalf("after revoke: want 0 roles %s*, got %d", prefix, n)
	}
}
