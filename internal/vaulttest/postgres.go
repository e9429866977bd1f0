package vaulttest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// EnvPGURL is the superuser URL that Vault's database engine connects with,
// set by scripts/services.sh.
const EnvPGURL = "CREDPROXY_PG_URL"

// pgConfig is the database/config entry name EnablePostgres writes.
const pgConfig = "credproxy"

// EnablePostgres mounts the database secrets engine at database/ (once),
// connects it to $CREDPROXY_PG_URL and creates role: reading
// database/creds/<role> creates a LOGIN role VALID UNTIL the lease's end,
// and revoking the lease drops it. Generated user names start with
// s.PGUserPrefix(role); the ones this server creates are dropped when the
// test ends, so a killed Vault does not leave users behind.
func (s *Server) EnablePostgres(t testing.TB, role string, defaultTTL, maxTTL time.Duration) {
	t.Helper()
	u := pgURL(t)
	pass, _ := u.User.Password()
	s.mount(t, "database", &api.MountInput{Type: "database"})
	tag := s.tag
	s.Write(t, "database/config/"+pgConfig, map[string]any{
		"plugin_name":       "postgresql-database-plugin",
		"connection_url":    "postgresql://{{username}}:{{password}}@" + u.Host + u.Path + "?" + u.RawQuery,
		"username":          u.User.Username(),
		"password":          pass,
		"allowed_roles":     "*",
		"username_template": `{{ printf "v-` + tag + `-%s-%s" (.RoleName | truncate 16) (random 12) | truncate 63 }}`,
	})
	s.Write(t, "database/roles/"+role, map[string]any{
		"db_name": pgConfig,
		"creation_statements": []string{
			`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
		},
		"revocation_statements": []string{`DROP ROLE IF EXISTS "{{name}}";`},
		"default_ttl":           ttlString(defaultTTL),
		"max_ttl":               ttlString(maxTTL),
	})
	t.Cleanup(func() { dropRoles(t, "v-"+tag+"-") })
}

// PGUserPrefix is how the user names of role's leases on this server start
// (it changes on Restart).
func (s *Server) PGUserPrefix(role string) string {
	if len(role) > 16 {
		role = role[:16]
	}
	return "v-" + s.tag + "-" + role + "-"
}

var safePrefix = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// PGRoleCount counts the PostgreSQL roles whose name starts with prefix.
func PGRoleCount(t testing.TB, prefix string) int {
	t.Helper()
	if !safePrefix.MatchString(prefix) {
		t.Fatalf("vaulttest: PGRoleCount: prefix %q must match %s", prefix, safePrefix)
	}
	conn, pass := adminConn(t)
	out, err := psql(conn, pass, fmt.Sprintf(
		"SELECT count(*) FROM pg_roles WHERE starts_with(rolname, '%s')", prefix))
	if err != nil {
		t.Fatalf("vaulttest: count roles: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("vaulttest: count roles: psql said %q", out)
	}
	return n
}

// PGLogin proves a credential works: it connects to the test database as
// user with pass and runs `select 1`. The error never contains pass.
func PGLogin(user, pass string) error {
	raw := os.Getenv(EnvPGURL)
	if raw == "" {
		return fmt.Errorf("$%s is not set: %s", EnvPGURL, howTo)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("$%s: %v", EnvPGURL, err)
	}
	u.User = url.User(user)
	out, err := psql(u.String(), pass, "SELECT 1")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "1" {
		return fmt.Errorf("select 1 returned %q", out)
	}
	return nil
}

func dropRoles(t testing.TB, prefix string) {
	conn, pass := adminConn(t)
	_, err := psql(conn, pass, fmt.Sprintf(`DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT rolname FROM pg_roles WHERE starts_with(rolname, '%s') LOOP
    EXECUTE format('DROP ROLE IF EXISTS %%I', r.rolname);
  END LOOP; END $$;`, prefix))
	if err != nil {
		t.Errorf("vaulttest: drop test roles %s*: %v", prefix, err)
	}
}

func pgURL(t testing.TB) *url.URL {
	t.Helper()
	raw := os.Getenv(EnvPGURL)
	if raw == "" {
		t.Fatalf("vaulttest: $%s is not set: %s", EnvPGURL, howTo)
	}
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		t.Fatalf("vaulttest: $%s must be postgres://user:password@host:port/db: %v", EnvPGURL, err)
	}
	return u
}

// adminConn splits $CREDPROXY_PG_URL into a URL without the password and
// the password, so that it stays off psql's command line.
func adminConn(t testing.TB) (conn, password string) {
	t.Helper()
	u := pgURL(t)
	password, _ = u.User.Password()
	u.User = url.User(u.User.Username())
	return u.String(), password
}

// psql runs one statement and returns its unaligned, tuples-only output.
// password, if set, goes through PGPASSWORD, never the command line.
func psql(conn, password, sql string) (string, error) {
	cmd := exec.Command("psql", "-X", "-w", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-d", conn, "-c", sql)
	cmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=5", "PGPASSFILE="+os.DevNull)
	if password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+password)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("psql: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// randomTag names one server start in its database user names, so parallel
// tests and packages sharing the database count only their own users.
func randomTag() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// PGRoleValidFor is how long PostgreSQL will still accept role user's
// password (its VALID UNTIL, which Vault's database engine sets to the
// lease's expiry on creation and on every renewal).
func PGRoleValidFor(t testing.TB, user string) time.Duration {
	t.Helper()
	if !safePrefix.MatchString(user) {
		t.Fatalf("vaulttest: PGRoleValidFor: user %q must match %s", user, safePrefix)
	}
	conn, pass := adminConn(t)
	out, err := psql(conn, pass, fmt.Sprintf(
		"SELECT floor(extract(epoch FROM rolvaliduntil - now())) FROM pg_roles WHERE rolname = '%s'", user))
	if err != nil {
		t.Fatalf("vaulttest: role %s: %v", user, err)
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
	if err != nil {
		t.Fatalf("vaulttest: role %s: VALID UNTIL: psql said %q", user, out)
	}
	return time.Duration(secs) * time.Second
}
