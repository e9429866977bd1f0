package pg_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credproxy/credproxy/lease"
)

// pairSource hands out a fixed user name and password (a static pair) that
// the test can change.
type pairSource struct {
	mu         sync.Mutex
	user, pass string
	acquires   int
}

func (s *pairSource) Acquire(context.Context, lease.Request) (lease.Grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acquires++
	return lease.Grant{Value: s.pass, Data: map[string]string{"username": s.user, "password": s.pass}, TTL: time.Hour, Renewable: true}, nil
}
func (s *pairSource) Renew(_ context.Context, g lease.Grant, _ time.Duration) (lease.Grant, error) {
	return g, nil
}
func (s *pairSource) Revoke(context.Context, lease.Grant) error { return nil }
func (s *pairSource) set(pass string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pass = pass
}

// connectErr connects through addr and wants a PgError.
func connectErr(t *testing.T, addr string) *pgconn.PgError {
	t.Helper()
	return connectConfigErr(t, agentConfig(t, addr, "agent"))
}

func connectConfigErr(t *testing.T, cfg *pgx.ConnConfig) *pgconn.PgError {
	t.Helper()
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	if err == nil {
		_ = c.Close(context.Background())
		t.Fatalf("connect through %s: want an error", cfg.Host)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("connect through %s: %v; want a PostgreSQL ErrorResponse", cfg.Host, err)
	}
	return pe
}

// Wrong upstream password, PostgreSQL down and Vault down: the agent gets a
// FATAL ErrorResponse naming the credential (never the password, never the
// upstream's own auth error), and the listeners keep serving and recover.
func TestUpstreamFailures(t *testing.T) {
	const right, wrong = "sk-test-right-pg-password", "sk-test-wrong-pg-password"
	a := admin(t)
	role := "credproxy_pgtest_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	mustExec(t, a, "CREATE ROLE "+role+" LOGIN PASSWORD '"+right+"'")
	t.Cleanup(func() { _, _ = a.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
	pair := &pairSource{user: role, pass: wrong}
	h := newHarness(t, policy, lease.Credential{Name: "static-db", SourceName: "test", Source: pair, Policy: policy})
	good, _ := h.serve(database(t, "reports", "reports-db"))
	static, _ := h.serve(database(t, "static", "static-db"))

	// Wrong password.
	for range 2 {
		pe := connectErr(t, static)
		if pe.Code != "28000" || !strings.Contains(pe.Message, `credential "static-db"`) ||
			strings.Contains(pe.Message, wrong) || strings.Contains(pe.Message, "password authentication failed") {
			t.Fatalf("wrong password: agent got %s %q; want 28000 naming the credential, without the upstream's text", pe.Code, pe.Message)
		}
	}
	if _, _, fails, _, _ := h.obs.get(); fails != 2 {
		t.Fatalf("auth failures counted: %d, want 2", fails)
	}
	if strings.Contains(h.logs.String(), wrong) || strings.Contains(h.audit.String(), wrong) {
		t.Fatalf("the password reached the logs or the audit trail")
	}
	// The other database is unaffected; after the fix the bad one recovers.
	if u := currentUser(t, connect(t, good)); !strings.HasPrefix(u, h.prefix) {
		t.Fatalf("good database: user %q", u)
	}
	pair.set(right)
	h.clock.Advance(time.Hour) // past the 401 window: the next login acquires afresh
	if u := currentUser(t, connectRetry(t, static)); u != role {
		t.Fatalf("after the fix: user %q, want %q", u, role)
	}

	// PostgreSQL down (nothing listens on the upstream port).
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	down := database(t, "down", "reports-db")
	down.Upstream.Port = port
	downAddr, _ := h.serve(down)
	pe := connectErr(t, downAddr)
	if pe.Code != "08001" || !strings.Contains(pe.Message, `credential "reports-db"`) || !strings.Contains(pe.Message, "cannot connect") {
		t.Fatalf("PostgreSQL down: agent got %s %q", pe.Code, pe.Message)
	}

	// Vault down: no lease can be had (the current one is revoked first).
	for _, in := range h.mgr.List() {
		if in.Credential == "reports-db" {
			_ = h.mgr.Revoke(t.Context(), in.ID, "")
		}
	}
	h.vault.Stop()
	pe = connectErr(t, good)
	if pe.Code != "08001" || !strings.Contains(pe.Message, `credential "reports-db"`) {
		t.Fatalf("Vault down: agent got %s %q", pe.Code, pe.Message)
	}
	h.vault.Restart(t)
	h.vault.EnablePostgres(t, vaultRole, time.Hour, 2*time.Hour)
	h.prefix = h.vault.PGUserPrefix(vaultRole)
	h.clock.Advance(time.Minute) // past the acquisition backoff
	if u := currentUser(t, connectRetry(t, good)); !strings.HasPrefix(u, h.prefix) {
		t.Fatalf("after Vault is back: user %q, want %s*", u, h.prefix)
	}
}

// connectRetry connects, retrying briefly while a lease operation settles.
func connectRetry(t *testing.T, addr string) *pgx.Conn {
	t.Helper()
	var err error
	for range 50 {
		var c *pgx.Conn
		if c, err = pgx.ConnectConfig(t.Context(), agentConfig(t, addr, "agent")); err == nil {
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("connect through %s: %v", addr, err)
	return nil
}
