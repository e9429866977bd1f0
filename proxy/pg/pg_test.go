package pg_test

import (
	"bytes"
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

// An agent with no password works through the listener as the Vault role:
// queries, a transaction, COPY both ways, a large result, prepared
// statements, LISTEN/NOTIFY and a context cancel. The role is in
// pg_stat_activity while connected and gone, with its Vault lease, once the
// last connection has been closed for the idle timeout.
func TestPgxThroughListener(t *testing.T) {
	h := newHarness(t, policy)
	addr, srv := h.serve(database(t, "reports", "reports-db"))
	a := admin(t)
	ctx := t.Context()

	c := connect(t, addr)
	var user string
	if err := c.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
		t.Fatalf("select current_user: %v", err)
	}
	if !strings.HasPrefix(user, h.prefix) {
		t.Fatalf("current_user = %q, want the Vault role %s*", user, h.prefix)
	}
	if n := sessions(t, a, h.prefix); n != 1 {
		t.Fatalf("pg_stat_activity: %d sessions of %s*, want 1", n, h.prefix)
	}

	// A transaction: rolled back, then committed.
	mustExec(t, c, "CREATE TEMP TABLE t (id int PRIMARY KEY, name text)")
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1, 'one')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, c, "SELECT count(*) FROM t"); n != 0 {
		t.Fatalf("after rollback: %d rows, want 0", n)
	}

	// COPY in (CopyFrom) and out (COPY TO STDOUT).
	rows := make([][]any, 1000)
	for i := range rows {
		rows[i] = []any{int32(i), "row"}
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id", "name"}, pgx.CopyFromRows(rows))
	if err != nil || n != 1000 {
		t.Fatalf("CopyFrom: %d rows, %v; want 1000", n, err)
	}
	var out bytes.Buffer
	tag, err := c.PgConn().CopyTo(ctx, &out, "COPY t TO STDOUT")
	if err != nil || tag.RowsAffected() != 1000 || strings.Count(out.String(), "\n") != 1000 {
		t.Fatalf("COPY TO STDOUT: %v rows, %d lines, %v", tag.RowsAffected(), strings.Count(out.String(), "\n"), err)
	}

	// A large result set: 200k rows, ~21 MB.
	var total, got int64
	r, err := c.Query(ctx, "SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g")
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var g int64
		var s string
		if err := r.Scan(&g, &s); err != nil {
			t.Fatal(err)
		}
		total += g
		got++
	}
	if r.Err() != nil || got != 200000 || total != 200000*200001/2 {
		t.Fatalf("large result: %d rows, sum %d, err %v", got, total, r.Err())
	}

	// Prepared statements (pgx also prepares every query it caches).
	if _, err := c.Prepare(ctx, "byid", "SELECT name FROM t WHERE id = $1"); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		var name string
		if err := c.QueryRow(ctx, "byid", i).Scan(&name); err != nil || name != "row" {
			t.Fatalf("prepared byid(%d) = %q, %v", i, name, err)
		}
	}

	// LISTEN on one connection, NOTIFY from another: both relayed.
	c2 := connect(t, addr)
	mustExec(t, c, "LISTEN credproxy_test")
	mustExec(t, c2, "NOTIFY credproxy_test, 'hello'")
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	note, err := c.WaitForNotification(wctx)
	cancel()
	if err != nil || note.Payload != "hello" {
		t.Fatalf("WaitForNotification: %+v, %v", note, err)
	}
	if n := sessions(t, a, h.prefix); n != 2 {
		t.Fatalf("pg_stat_activity: %d sessions, want 2 (one lease, two connections)", n)
	}
	if n := vaulttest.PGRoleCount(t, h.prefix); n != 1 {
		t.Fatalf("%d Vault roles for 2 connections, want 1 shared lease", n)
	}

	// A cancelled context sends a CancelRequest to the listener, which
	// forwards the backend's real key: the sleep is cancelled (57014) and
	// the connection stays usable.
	qctx, qcancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := c.Exec(qctx, "SELECT pg_sleep(60)"); errc <- err }()
	testutil.WaitFor(t, func() bool { return sleeping(t, a, h.prefix) }, "pg_sleep to start")
	start := time.Now()
	qcancel()
	err = <-errc
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("cancelled pg_sleep: err %v, want SQLSTATE 57014 (the backend got the cancel)", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("cancel took %v", time.Since(start))
	}
	if n := count(t, c, "SELECT 41 + 1"); n != 42 {
		t.Fatalf("after cancel: select = %d", n)
	}

	// Close both: the lease is kept until the idle timeout, then revoked.
	_ = c.Close(ctx)
	_ = c2.Close(ctx)
	testutil.WaitFor(t, func() bool { return srv.Connections() == 0 }, "the listener to see both connections closed")
	testutil.WaitFor(t, func() bool { return sessions(t, a, h.prefix) == 0 }, "the upstream sessions to end")
	if n := vaulttest.PGRoleCount(t, h.prefix); n != 1 {
		t.Fatalf("right after the last close: %d roles, want 1 (revoked only after idleTimeout)", n)
	}
	h.idleOut()
	if n := vaulttest.PGRoleCount(t, h.prefix); n != 0 {
		t.Fatalf("after idleTimeout: %d roles %s* left in pg_roles, want 0", n, h.prefix)
	}
	if n := h.vaultLeases(); n != 0 {
		t.Fatalf("after idleTimeout: Vault holds %d leases, want 0", n)
	}
	open, closed, authFail, in, outB := h.obs.get()
	if open != 2 || closed != 2 || authFail != 0 || in == 0 || outB < 20<<20 {
		t.Fatalf("observer: open %d closed %d authFail %d bytes in %d out %d", open, closed, authFail, in, outB)
	}
	audit := h.audit.String()
	if strings.Count(audit, `"event":"connection.opened"`) != 2 || strings.Count(audit, `"event":"connection.closed"`) != 2 ||
		!strings.Contains(audit, `"rule":"reports"`) || !strings.Contains(audit, `"purpose":"test reports"`) {
		t.Fatalf("audit trail lacks the connection events:\n%s", audit)
	}
}

func mustExec(t *testing.T, c *pgx.Conn, sql string) {
	t.Helper()
	if _, err := c.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t *testing.T, c *pgx.Conn, sql string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(t.Context(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// sleeping reports whether a backend of the role runs pg_sleep.
func sleeping(t *testing.T, a *pgx.Conn, prefix string) bool {
	t.Helper()
	var n int
	err := a.QueryRow(t.Context(), "SELECT count(*) FROM pg_stat_activity WHERE starts_with(usename, $1) AND query LIKE 'SELECT pg_sleep%' AND state = 'active'", prefix).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// The agent's startup parameters reach the upstream, except user and
// database (the config decides) and replication (refused).
func TestStartupParameters(t *testing.T) {
	h := newHarness(t, policy)
	db := database(t, "reports", "reports-db")
	addr, _ := h.serve(db)
	cfg := agentConfig(t, addr, "agent")
	cfg.Database = "not-the-configured-one"
	cfg.RuntimeParams = map[string]string{"application_name": "nightly-report", "search_path": "pg_catalog"}
	c := connectConfig(t, cfg)
	var app, dbname, path string
	if err := c.QueryRow(t.Context(), "SELECT current_setting('application_name'), current_database(), current_setting('search_path')").
		Scan(&app, &dbname, &path); err != nil {
		t.Fatal(err)
	}
	if app != "nightly-report" || dbname != db.Upstream.Database || path != "pg_catalog" {
		t.Fatalf("upstream session: application_name %q, database %q, search_path %q", app, dbname, path)
	}
	cfg = agentConfig(t, addr, "agent")
	cfg.RuntimeParams = map[string]string{"replication": "database"}
	if pe := connectConfigErr(t, cfg); pe.Code != "0A000" {
		t.Fatalf("replication connection: %s %q, want 0A000", pe.Code, pe.Message)
	}
}
