package pg_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/internal/vaulttest"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
	"github.com/credproxy/credproxy/lease/vault"
	"github.com/credproxy/credproxy/proxy/pg"
	"github.com/credproxy/credproxy/rules"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// policy: 10m leases renewed 2m ahead, revoked 5m after the last connection
// closed, never older than 1h.
var policy = lease.Policy{
	TTL: 10 * time.Minute, MaxTTL: time.Hour, RenewBeforeExpiry: 2 * time.Minute,
	IdleTimeout: 5 * time.Minute, AutoRenew: true,
}

// observer records a Server's measurements.
type observer struct {
	mu                     sync.Mutex
	open, closed, authFail int
	fromAgent, toAgent     int64
}

func (o *observer) ConnOpened(string) { o.mu.Lock(); o.open++; o.mu.Unlock() }
func (o *observer) ConnClosed(string, time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed++
}
func (o *observer) Relayed(string) (func(int), func(int)) {
	return func(n int) { o.mu.Lock(); o.fromAgent += int64(n); o.mu.Unlock() },
		func(n int) { o.mu.Lock(); o.toAgent += int64(n); o.mu.Unlock() }
}
func (o *observer) AuthFailed(string) { o.mu.Lock(); o.authFail++; o.mu.Unlock() }
func (o *observer) get() (open, closed, authFail int, in, out int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.open, o.closed, o.authFail, o.fromAgent, o.toAgent
}

type harness struct {
	t      *testing.T
	clock  *leasetest.Clock
	mgr    *lease.Manager
	audit  *testutil.SyncBuffer
	logs   *testutil.SyncBuffer
	obs    *observer
	vault  *vaulttest.Server
	prefix string // the user names of the Vault role's leases start so
}

const vaultRole = "pgproxy"

// newHarness runs a real Vault with the database engine on the test
// PostgreSQL, and a lease manager on a fake clock with credential
// reports-db (database/creds/pgproxy) plus any extra credentials.
func newHarness(t *testing.T, p lease.Policy, extra ...lease.Credential) *harness {
	t.Helper()
	h := &harness{t: t, clock: leasetest.NewClock(t0), audit: &testutil.SyncBuffer{}, logs: &testutil.SyncBuffer{}, obs: &observer{}}
	h.vault = vaulttest.Start(t)
	h.vault.EnablePostgres(t, vaultRole, time.Hour, 2*time.Hour)
	h.prefix = h.vault.PGUserPrefix(vaultRole)
	client, err := vault.NewClient(vault.Config{Address: h.vault.Addr, Auth: vault.Auth{Token: h.vault.RootToken}, Logger: h.logger()})
	if err != nil {
		t.Fatalf("vault.NewClient: %v", err)
	}
	t.Cleanup(client.Close)
	creds := append([]lease.Credential{{Name: "reports-db", SourceName: "vault",
		Source: client.Source("database/creds/"+vaultRole, "password"), Policy: p}}, extra...)
	h.mgr = lease.NewManager(creds, lease.Options{Clock: h.clock, Audit: lease.NewAuditor(h.audit), Logger: h.logger(),
		Rand: func() float64 { return 0.5 }})
	t.Cleanup(func() { _ = h.mgr.Shutdown(context.Background()) })
	return h
}

func (h *harness) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// database is a databases: entry for the test PostgreSQL.
func database(t *testing.T, name, credential string) *rules.Database {
	t.Helper()
	u := adminURL(t)
	port, _ := strconv.Atoi(u.Port())
	return &rules.Database{Name: name, Listen: "127.0.0.1:0", Credential: credential, Purpose: "test " + name,
		Upstream: rules.DBUpstream{Host: u.Hostname(), Port: port, Database: strings.TrimPrefix(u.Path, "/"), SSLMode: rules.SSLDisable}}
}

// serve runs a Server for db on a free port until the test ends.
func (h *harness) serve(db *rules.Database, mod ...func(*pg.Options)) (string, *pg.Server) {
	h.t.Helper()
	o := pg.Options{Database: db, Credentials: h.mgr, Identity: "agent-a", Observer: h.obs, Logger: h.logger()}
	for _, f := range mod {
		f(&o)
	}
	srv, err := pg.New(o)
	if err != nil {
		h.t.Fatalf("pg.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			h.t.Errorf("Close: %v", err)
		}
		if err := <-done; err != pg.ErrServerClosed {
			h.t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String(), srv
}

// idleOut moves the fake clock past the idle timeout and waits for the
// manager to have revoked every lease (the revocation runs in the
// background: lease.Settle is only for the lease package's own tests).
func (h *harness) idleOut() {
	h.clock.Advance(policy.IdleTimeout)
	testutil.WaitFor(h.t, func() bool { return len(h.mgr.List()) == 0 && strings.Contains(h.audit.String(), `"reason":"idle"`) },
		"the idle lease to be revoked")
	testutil.WaitFor(h.t, func() bool { return vaulttest.PGRoleCount(h.t, h.prefix) == 0 }, "the role to be dropped")
}

func adminURL(t testing.TB) *url.URL {
	t.Helper()
	raw := os.Getenv(vaulttest.EnvPGURL)
	if raw == "" {
		t.Fatalf("$%s is not set: source scripts/services.sh", vaulttest.EnvPGURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// admin connects to the test PostgreSQL as the superuser.
func admin(t *testing.T) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(t.Context(), adminURL(t).String())
	if err != nil {
		t.Fatalf("admin connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// sessions counts the backends logged in as a user starting with prefix.
func sessions(t *testing.T, a *pgx.Conn, prefix string) int {
	t.Helper()
	var n int
	if err := a.QueryRow(t.Context(), "SELECT count(*) FROM pg_stat_activity WHERE starts_with(usename, $1)", prefix).Scan(&n); err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	return n
}

// vaultLeases counts Vault's leases under database/creds/<role>.
func (h *harness) vaultLeases() int {
	h.t.Helper()
	sec, err := h.vault.Client.Logical().List("sys/leases/lookup/database/creds/" + vaultRole + "/")
	if err != nil {
		h.t.Fatalf("list leases: %v", err)
	}
	if sec == nil || sec.Data["keys"] == nil {
		return 0
	}
	return len(sec.Data["keys"].([]any))
}

// agentConfig is how an agent reaches the listener: any user, no password.
func agentConfig(t *testing.T, addr, user string) *pgx.ConnConfig {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " user=" + user + " dbname=whatever sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = ""
	// As psql's Ctrl-C: a cancelled context sends a CancelRequest.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 10 * time.Second}
	}
	return cfg
}

func connect(t *testing.T, addr string) *pgx.Conn {
	t.Helper()
	return connectConfig(t, agentConfig(t, addr, "agent"))
}

func connectConfig(t *testing.T, cfg *pgx.ConnConfig) *pgx.Conn {
	t.Helper()
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect through %s:%d: %v", cfg.Host, cfg.Port, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// psql runs psql against the listener with no password; stdin feeds it.
func psql(t *testing.T, addr, stdin string, args ...string) (string, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("psql", append([]string{"-X", "-w", "-q", "-tA", "-v", "ON_ERROR_STOP=1",
		"-d", "host=" + host + " port=" + port + " user=agent dbname=whatever sslmode=prefer"}, args...)...)
	cmd.Env = psqlEnv(t)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), err
}

// psqlEnv gives psql no password from anywhere.
func psqlEnv(t *testing.T) []string {
	return append(os.Environ(), "PGPASSFILE="+filepath.Join(t.TempDir(), "none"), "PGCONNECT_TIMEOUT=10", "PGPASSWORD=")
}

func splitAddr(addr string) (host, port string) {
	host, port, _ = net.SplitHostPort(addr)
	return host, port
}
