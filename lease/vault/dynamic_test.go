package vault

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/vaulttest"
	"github.com/credproxy/credproxy/lease"
)

func TestPostgresAcquireRenewRevoke(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.EnablePostgres(t, "ro", time.Hour, 2*time.Hour)
	prefix := s.PGUserPrefix("ro")
	src := newClient(t, s, rootAuth(s)).Source("database/creds/ro", "password")

	g := acquire(t, src)
	user, pass := g.Data["username"], g.Data["password"]
	if g.Value != pass || pass == "" || !strings.HasPrefix(user, prefix) {
		t.Fatalf("Acquire: want a %s* user whose password is the value, got user %q, value==password %v",
			prefix, user, g.Value == pass)
	}
	if !strings.HasPrefix(g.SourceLeaseID, "database/creds/ro/") || g.TTL != reqFor().TTL || !g.Renewable {
		t.Fatalf("Acquire: want lease database/creds/ro/…, TTL %v (the role's 1h brought down), renewable; got %q %v %v",
			reqFor().TTL, g.SourceLeaseID, g.TTL, g.Renewable)
	}
	if err := vaulttest.PGLogin(user, pass); err != nil {
		t.Fatalf("PostgreSQL rejects the new credentials: %v", err)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 1 {
		t.Fatalf("after Acquire: want 1 role %s*, got %d", prefix, n)
	}

	g2, err := src.Renew(t.Context(), g, 30*time.Minute)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if g2.TTL != 30*time.Minute || g2.SourceLeaseID != g.SourceLeaseID || g2.Value != g.Value {
		t.Fatalf("Renew 30m: want TTL 30m, same lease and value; got %v %q same value %v", g2.TTL, g2.SourceLeaseID, g2.Value == g.Value)
	}

	if err := src.Revoke(t.Context(), g2); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	// sync revocation: the user is gone when Revoke returns, not later.
	if n := vaulttest.PGRoleCount(t, prefix); n != 0 {
		t.Fatalf("right after Revoke: want 0 roles %s*, got %d", prefix, n)
	}
	if err := vaulttest.PGLogin(user, pass); err == nil {
		t.Fatalf("PostgreSQL still accepts revoked credentials")
	}

	// Revoking again: Vault treats an unknown lease as already revoked.
	if err := src.Revoke(t.Context(), g2); err != nil {
		t.Fatalf("second Revoke: want nil (Vault: unknown lease = revoked), got %v", err)
	}
	_, err = src.Renew(t.Context(), g2, time.Minute)
	if !errors.Is(err, lease.ErrPermanent) {
		t.Fatalf("Renew after Revoke: want ErrPermanent, got %v", err)
	}
	mustErr(t, err, "database/creds/ro")
	noValues(t, err, pass)
}

func TestPostgresRenewCappedByMaxTTL(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.EnablePostgres(t, "capped", time.Minute, 2*time.Minute)
	src := newClient(t, s, rootAuth(s)).Source("database/creds/capped", "password")

	g := acquire(t, src)
	if g.TTL != time.Minute {
		t.Fatalf("Acquire: want the role's default TTL 1m, got %v", g.TTL)
	}
	g2, err := src.Renew(t.Context(), g, time.Hour)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if g2.TTL > 2*time.Minute || g2.TTL < 100*time.Second {
		t.Fatalf("Renew 1h with max_ttl 2m: want a TTL just under 2m (the cap), got %v", g2.TTL)
	}
}

func TestDynamicWrongFieldRevokesTheLease(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.EnablePostgres(t, "nofield", time.Hour, time.Hour)
	prefix := s.PGUserPrefix("nofield")
	src := newClient(t, s, rootAuth(s)).Source("database/creds/nofield", "api_key")

	_, err := src.Acquire(t.Context(), reqFor())
	mustErr(t, err, "database/creds/nofield", `"api_key"`, "[password username]")
	if n := vaulttest.PGRoleCount(t, prefix); n != 0 {
		t.Fatalf("an unusable dynamic secret must be revoked at once: want 0 roles %s*, got %d", prefix, n)
	}
}

// The policy a credproxy token needs for a dynamic secret: read the creds
// path and revoke its leases (renewal is in Vault's default policy).
const dbPolicy = `
path "database/creds/ro" { capabilities = ["read"] }
path "sys/leases/revoke/database/creds/ro/*" { capabilities = ["update"] }
`

func TestPostgresWithLeastPrivilegePolicy(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.EnablePostgres(t, "ro", time.Hour, 2*time.Hour)
	s.Policy(t, "db-ro", dbPolicy)
	prefix := s.PGUserPrefix("ro")
	src := newClient(t, s, Auth{Token: s.Token(t, 0, "db-ro")}).Source("database/creds/ro", "password")

	g := acquire(t, src)
	if _, err := src.Renew(t.Context(), g, 10*time.Minute); err != nil {
		t.Fatalf("Renew with the default policy's sys/leases/renew: %v", err)
	}
	if err := src.Revoke(t.Context(), g); err != nil {
		t.Fatalf("Revoke with sys/leases/revoke/database/creds/ro/*: %v", err)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 0 {
		t.Fatalf("after Revoke: want 0 roles %s*, got %d", prefix, n)
	}
}

// Vault grants the role's default TTL on a read; credproxy brings it down to
// the credential's ttl at once, so a crash leaves the user alive for the ttl
// the config names, not for the role's day.
func TestPostgresAcquireShortensTheLeaseToTheTTL(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.EnablePostgres(t, "daylong", 24*time.Hour, 48*time.Hour)
	src := newClient(t, s, rootAuth(s)).Source("database/creds/daylong", "password")

	g, err := src.Acquire(t.Context(), lease.Request{Credential: "reports", TTL: 15 * time.Minute})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if g.TTL != 15*time.Minute {
		t.Errorf("Acquire with ttl 15m on a 24h role: grant TTL %v, want 15m", g.TTL)
	}
	if ttl := s.LeaseTTL(t, g.SourceLeaseID); ttl > 15*time.Minute || ttl < 14*time.Minute {
		t.Errorf("sys/leases/lookup: the lease has %v left at Vault, want at most 15m (and about that)", ttl)
	}
	if left := vaulttest.PGRoleValidFor(t, g.Data["username"]); left > 15*time.Minute+time.Minute {
		t.Errorf("PostgreSQL accepts the user for another %v, want about 15m", left)
	}
	if err := vaulttest.PGLogin(g.Data["username"], g.Value); err != nil {
		t.Errorf("PostgreSQL rejects the shortened lease's credentials: %v", err)
	}
}

// When the lease cannot be brought down (here a policy denies renewal), the
// new lease is revoked and the acquisition fails: no 24h user is left.
func TestPostgresAcquireRevokesALeaseItCannotShorten(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.EnablePostgres(t, "ro", 24*time.Hour, 48*time.Hour)
	s.Policy(t, "db-ro-norenew", dbPolicy+`path "sys/leases/renew" { capabilities = ["deny"] }`)
	prefix := s.PGUserPrefix("ro")
	src := newClient(t, s, Auth{Token: s.Token(t, 0, "db-ro-norenew")}).Source("database/creds/ro", "password")

	_, err := src.Acquire(t.Context(), lease.Request{Credential: "reports", TTL: 15 * time.Minute})
	if !errors.Is(err, lease.ErrDenied) {
		t.Fatalf("Acquire when renewal is denied: want ErrDenied, got %v", err)
	}
	mustErr(t, err, "database/creds/ro", "lease revoked")
	if n := vaulttest.PGRoleCount(t, prefix); n != 0 {
		t.Fatalf("a lease that could not be shortened must be revoked: want 0 roles %s*, got %d", prefix, n)
	}
	if keys := leaseKeys(t, s, "database/creds/ro"); len(keys) != 0 {
		t.Fatalf("Vault still holds leases %v", keys)
	}
}

// A role whose default TTL is already within the credential's ttl is left
// alone: no renewal call.
func TestPostgresAcquireWithinTTLIsNotRenewed(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.EnablePostgres(t, "short", 10*time.Minute, time.Hour)
	s.Policy(t, "db-short-norenew", `
path "database/creds/short" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["deny"] }
`)
	src := newClient(t, s, Auth{Token: s.Token(t, 0, "db-short-norenew")}).Source("database/creds/short", "password")
	g, err := src.Acquire(t.Context(), lease.Request{Credential: "reports", TTL: 15 * time.Minute})
	if err != nil || g.TTL != 10*time.Minute {
		t.Fatalf("Acquire with ttl 15m on a 10m role: want TTL 10m and no renewal, got %v, %v", g.TTL, err)
	}
}

func leaseKeys(t *testing.T, s *vaulttest.Server, prefix string) []any {
	t.Helper()
	sec, err := s.Client.Logical().List("sys/leases/lookup/" + prefix)
	if err != nil {
		t.Fatal(err)
	}
	if sec == nil {
		return nil
	}
	keys, _ := sec.Data["keys"].([]any)
	return keys
}
