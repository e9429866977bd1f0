package pg_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/internal/vaulttest"
)

func currentUser(t *testing.T, c *pgx.Conn) string {
	t.Helper()
	var u string
	if err := c.QueryRow(t.Context(), "SELECT current_user").Scan(&u); err != nil {
		t.Fatalf("select current_user: %v", err)
	}
	return u
}

// wantFatal runs a query on c and wants the FATAL error credproxy sent.
func wantFatal(t *testing.T, c *pgx.Conn, code string, mention ...string) {
	t.Helper()
	var pe *pgconn.PgError
	var err error
	for range 50 { // the FATAL may still be on its way when the query is sent
		_, err = c.Exec(t.Context(), "SELECT 1")
		if err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != code {
		t.Fatalf("query on a terminated connection: %v; want FATAL %s", err, code)
	}
	for _, m := range mention {
		if !strings.Contains(pe.Message, m) {
			t.Fatalf("FATAL message %q does not mention %q", pe.Message, m)
		}
	}
}

func (h *harness) waitEvents(what string, n int) {
	h.t.Helper()
	testutil.WaitFor(h.t, func() bool { return strings.Count(h.audit.String(), `"event":"`+what+`"`) >= n },
		what+" in the audit trail")
}

// Rotation at maxTTL: new connections get the new lease; an open one keeps
// the old lease past its rotation until the old lease's hard expiry, when
// it is terminated with a FATAL error naming the credential.
func TestRotationKeepsOpenConnectionsUntilExpiry(t *testing.T) {
	p := policy
	p.MaxTTL = 25 * time.Minute
	h := newHarness(t, p)
	addr, _ := h.serve(database(t, "reports", "reports-db"))
	c1 := connect(t, addr)
	u1 := currentUser(t, c1)

	h.clock.Advance(8 * time.Minute) // renewed while held (no query needed): to 18m
	h.waitEvents("lease.renewed", 1)
	h.clock.Advance(8 * time.Minute) // 16m: a renewal would pass maxTTL: rotate
	h.waitEvents("lease.created", 2)
	c2 := connect(t, addr)
	if u2 := currentUser(t, c2); u2 == u1 || !strings.HasPrefix(u2, h.prefix) {
		t.Fatalf("after rotation a new connection logs in as %q, want a new Vault role (old %q)", u2, u1)
	}
	h.clock.Advance(time.Minute) // 17m: the rotation grace is over, but c1 holds the old lease
	time.Sleep(50 * time.Millisecond)
	if u := currentUser(t, c1); u != u1 {
		t.Fatalf("open connection now %q, want %q", u, u1)
	}
	if n := vaulttest.PGRoleCount(t, h.prefix); n != 2 {
		t.Fatalf("%d roles while the old lease is held, want 2", n)
	}
	h.clock.Advance(time.Minute) // 18m: the old lease's hard expiry
	wantFatal(t, c1, "57P01", `credential "reports-db"`, "expired or was revoked")
	testutil.WaitFor(t, func() bool { return vaulttest.PGRoleCount(t, h.prefix) == 1 }, "the old role to be dropped")
	if u := currentUser(t, c2); !strings.HasPrefix(u, h.prefix) {
		t.Fatalf("the new lease's connection broke: %q", u)
	}
}

// At shutdown the listener ends its connections (FATAL 57P01) before the
// manager revokes the leases: nothing is left in PostgreSQL or Vault.
func TestShutdownEndsConnectionsThenRevokes(t *testing.T) {
	h := newHarness(t, policy)
	addr, srv := h.serve(database(t, "reports", "reports-db"))
	c := connect(t, addr)
	_ = currentUser(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantFatal(t, c, "57P01", "shutting down")
	if err := h.mgr.Shutdown(ctx); err != nil {
		t.Fatalf("lease shutdown: %v", err)
	}
	if n := vaulttest.PGRoleCount(t, h.prefix); n != 0 {
		t.Fatalf("after shutdown %d roles left, want 0", n)
	}
	if n := h.vaultLeases(); n != 0 {
		t.Fatalf("after shutdown Vault holds %d leases, want 0", n)
	}
	if _, err := pgx.ConnectConfig(t.Context(), agentConfig(t, addr, "agent")); err == nil {
		t.Fatalf("connect after Close: want an error")
	}
}
