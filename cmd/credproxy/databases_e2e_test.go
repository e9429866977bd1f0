package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/credproxy/credproxy/internal/vaulttest"
)

const databaseRules = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0}
identity: test-agent
sources:
  vault: {type: vault, address: "%[1]s", auth: {method: token, tokenFile: vault-token}}
credentials:
  reports-db: {source: vault, path: database/creds/e2edb, ttl: 1m, maxTTL: 1h, renewBeforeExpiry: 20s, idleTimeout: 1h}
databases:
  - name: reports
    listen: "%[2]s"
    upstream: {host: "%[3]s", port: %[4]s, database: "%[5]s", sslmode: disable}
    credential: reports-db
    purpose: e2e report
`

// credproxy run with a databases: entry: an agent connects with no
// password and is the Vault role; at SIGTERM its connection ends with a
// FATAL error, then the lease is revoked: the role is gone from PostgreSQL
// and Vault holds no lease.
func TestDatabaseListenerEndToEnd(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.EnablePostgres(t, "e2edb", time.Hour, 2*time.Hour)
	prefix := vs.PGUserPrefix("e2edb")
	up, err := url.Parse(os.Getenv(vaulttest.EnvPGURL))
	if err != nil || up.Host == "" {
		t.Fatalf("$%s: %v", vaulttest.EnvPGURL, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "vault-token"), []byte(vs.RootToken+"\n"), 0o600)
	cfgFile := filepath.Join(dir, "rules.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, databaseRules, vs.Addr, listen, up.Hostname(), up.Port(), strings.TrimPrefix(up.Path, "/")), 0o600)
	var out, errOut strings.Builder
	if code := cmdCheck([]string{"--config", cfgFile}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "database reports") || !strings.Contains(out.String(), "credential=reports-db") {
		t.Fatalf("credproxy check: %d\n%s%s", code, out.String(), errOut.String())
	}
	s := startServe(t, mustLoad(t, cfgFile))

	host, port, _ := net.SplitHostPort(listen)
	cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " user=agent dbname=x sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = ""
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect through the database listener: %v", err)
	}
	defer c.Close(context.Background())
	var user string
	if err := c.QueryRow(t.Context(), "SELECT current_user").Scan(&user); err != nil || !strings.HasPrefix(user, prefix) {
		t.Fatalf("current_user = %q, %v; want the Vault role %s*", user, err, prefix)
	}
	if !strings.Contains(s.audit.String(), `"event":"connection.opened"`) || !strings.Contains(s.audit.String(), `"purpose":"e2e report"`) {
		t.Fatalf("audit trail lacks connection.opened:\n%s", s.audit.String())
	}

	if err := s.shutdown(t); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	_, err = c.Exec(t.Context(), "SELECT 1")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Fatalf("query after SIGTERM: %v; want FATAL 57P01 from credproxy", err)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 0 {
		t.Fatalf("after shutdown %d roles %s* left, want 0", n, prefix)
	}
	sec, err := vs.Client.Logical().List("sys/leases/lookup/database/creds/e2edb/")
	if err != nil {
		t.Fatal(err)
	}
	if sec != nil && sec.Data["keys"] != nil && len(sec.Data["keys"].([]any)) != 0 {
		t.Fatalf("after shutdown Vault holds leases: %v", sec.Data["keys"])
	}
}
