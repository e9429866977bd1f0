package vault

import (
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/vaulttest"
)

func TestKVv2AcquireThenRenewPicksUpNewValue(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-one"})
	src := newClient(t, s, rootAuth(s)).Source("secret/data/openai", "")

	g := acquire(t, src)
	if g.Value != "sk-test-one" || g.Data["api_key"] != "sk-test-one" {
		t.Fatalf("Acquire: want value sk-test-one, got value %q data %v", g.Value, g.Data)
	}
	if g.SourceLeaseID != "" || g.TTL != 0 || !g.Renewable {
		t.Fatalf("KV grant: want no lease id, TTL 0, renewable; got id %q TTL %v renewable %v", g.SourceLeaseID, g.TTL, g.Renewable)
	}
	if _, ok := g.Data["metadata"]; ok {
		t.Fatalf("KV v2 metadata leaked into Data: %v", g.Data)
	}

	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-two"})
	g2, err := src.Renew(t.Context(), g, 15*time.Minute)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if g2.Value != "sk-test-two" {
		t.Fatalf("Renew after a change in Vault: want sk-test-two, got %q", g2.Value)
	}
	if err := src.Revoke(t.Context(), g2); err != nil {
		t.Fatalf("Revoke of a KV grant: want nil, got %v", err)
	}
}

func TestKVv1AcquireThenRenewPicksUpNewValue(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.EnableKV(t, "kv", 1)
	s.Write(t, "kv/anthropic", map[string]any{"key": "sk-test-v1-one"})
	src := newClient(t, s, rootAuth(s)).Source("kv/anthropic", "key")

	g := acquire(t, src)
	if g.Value != "sk-test-v1-one" || g.SourceLeaseID != "" || g.TTL != 0 || !g.Renewable {
		t.Fatalf("Acquire: want sk-test-v1-one with no lease, TTL 0, renewable; got %q id %q TTL %v renewable %v",
			g.Value, g.SourceLeaseID, g.TTL, g.Renewable)
	}
	s.Write(t, "kv/anthropic", map[string]any{"key": "sk-test-v1-two"})
	g2, err := src.Renew(t.Context(), g, time.Minute)
	if err != nil || g2.Value != "sk-test-v1-two" {
		t.Fatalf("Renew: want sk-test-v1-two, got %q (err %v)", g2.Value, err)
	}
}

func TestFieldSelection(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.KVPut(t, "secret", "db", map[string]any{"username": "app", "password": "sk-test-pw", "port": 5432})
	c := newClient(t, s, rootAuth(s))

	// Several fields and no field: no single value; templates use .Data
	// (the injection refuses .Value with a message saying to set field:).
	g := acquire(t, c.Source("secret/data/db", ""))
	if g.Value != "" || len(g.Data) != 3 || g.Data["password"] != "sk-test-pw" {
		t.Fatalf("no field, three fields: want an empty Value and all of Data, got value %q, %d fields", g.Value, len(g.Data))
	}

	_, err := c.Source("secret/data/db", "api_key").Acquire(t.Context(), reqFor())
	mustErr(t, err, "secret/data/db", `"api_key"`, "[password port username]")
	noValues(t, err, "sk-test-pw", "5432")

	g = acquire(t, c.Source("secret/data/db", "password"))
	if g.Value != "sk-test-pw" || g.Data["username"] != "app" || g.Data["port"] != "5432" {
		t.Fatalf("field password: want value sk-test-pw and all fields as strings, got %q %v", g.Value, g.Data)
	}
}

func TestNoSecretAtPath(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-x"})
	c := newClient(t, s, rootAuth(s))

	_, err := c.Source("secret/data/nothing-here", "").Acquire(t.Context(), reqFor())
	mustErr(t, err, "no secret at path secret/data/nothing-here")
	if !retryable(err) {
		t.Fatalf("a missing secret may appear later: want a plain error, got %v", err)
	}

	// KV v2 read without data/: Vault's warning explains it.
	_, err = c.Source("secret/openai", "").Acquire(t.Context(), reqFor())
	mustErr(t, err, "no secret at path secret/openai")
	t.Logf("KV v2 path without data/: %v", err)

	if err := s.Client.KVv2("secret").Delete(t.Context(), "openai"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Source("secret/data/openai", "").Acquire(t.Context(), reqFor())
	mustErr(t, err, "no secret at path secret/data/openai", "deleted")
}
