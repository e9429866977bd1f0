package rules

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadDatabases(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_DB_PASSWORD", "sk-test-db-password")
	c, err := Load(filepath.Join("testdata", "databases.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	dir := absTestdata(t)
	want := []*Database{
		{Name: "reports", Listen: "127.0.0.1:5433", Credential: "reports-db", Identities: []string{"agent-a"},
			Purpose: "nightly report", Line: 7, Upstream: DBUpstream{Host: "db.internal", Port: 5432, Database: "reports",
				SSLMode: SSLVerifyFull, CAFile: filepath.Join(dir, "extra-root.pem")}},
		{Name: "warehouse", Listen: "127.0.0.1:5434", Credential: "static-db", Line: 13,
			Upstream: DBUpstream{Host: "127.0.0.1", Port: 6432, Database: "dw", User: "sync", SSLMode: SSLDisable}},
	}
	if !reflect.DeepEqual(c.Databases, want) {
		for i := range c.Databases {
			t.Logf("got %+v", *c.Databases[i])
		}
		t.Fatalf("Databases differ from %+v %+v", *want[0], *want[1])
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "databases[0].identities: database \"reports\": without clients") {
		t.Fatalf("warnings = %q, want one about identities without clients", c.Warnings)
	}
	if got := c.Databases[1].Upstream.Addr(); got != "127.0.0.1:6432" {
		t.Fatalf("Addr() = %q", got)
	}
}

func TestLoadDatabaseErrors(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_DB_PASSWORD", "sk-test-db-password")
	dir := absTestdata(t)
	path := filepath.Join("testdata", "bad_databases.yaml")
	want := []string{
		`6: databases[0].upstream.sslmode: must be disable, require or verify-full, not "prefer"`,
		`7: databases[0].credential: unknown credential "nope"`,
		`8: databases[1].name: duplicate database name "a" (first at line 4)`,
		`9: databases[1].listen: 127.0.0.1:5433 is already the listen address of the database at line 4`,
		`10: databases[1].upstream.host: required`,
		`10: databases[1].upstream.port: port 70000 out of range 1-65535`,
		`10: databases[1].upstream.database: required: the database every connection opens`,
		`10: databases[1].upstream.caFile: only applies to sslmode require or verify-full`,
		`10: databases[1].upstream.user: required: credential "static-db" (source env) holds only a password`,
		`12: databases[2].name: bad database name "b c": use letters, digits, '.', '_' and '-'`,
		`13: databases[2].listen: want host:port, as in 127.0.0.1:3128: address localhost: missing port in address`,
		`14: databases[2].upstream.caFile: stat ` + filepath.Join(dir, "no-such-ca.pem") + `: no such file or directory`,
		`14: databases[2].upstream.user: required: credential "static-db" (source env) holds only a password`,
		`16: databases[2].user: unknown key (want one of: name, listen, upstream, credential, identities, purpose)`,
		`17: databases[3].name: required`,
		`17: databases[3].listen: 127.0.0.1:3128 is already credproxy's proxy or admin listener`,
		`17: databases[3].credential: required`,
	}
	_, err := Load(path)
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("Load(%s) = %v, want ConfigErrors", path, err)
	}
	for _, w := range want {
		if !hasLinePrefix(err.Error(), path+":"+w) {
			t.Errorf("no error line %q; got:\n%v", path+":"+w, err)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("%d errors, want %d:\n%v", len(errs), len(want), err)
	}
}

func TestREADMEDatabasesExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "<!-- databases-example")
	if !ok {
		t.Fatal("README.md has no databases-example marker")
	}
	_, block, _ := strings.Cut(after, "```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "db-ca.pem"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Parse(filepath.Join(dir, "rules.yaml"), []byte(block))
	if err != nil {
		t.Fatalf("the README's example: %v", err)
	}
	d := c.Databases[0]
	if d.Name != "reports" || d.Listen != "127.0.0.1:5433" || d.Upstream.Addr() != "db.internal:5432" ||
		d.Upstream.SSLMode != SSLVerifyFull || d.Credential != "reports-db" {
		t.Fatalf("the README's example loads as %+v", *d)
	}
}

// A leased login only leaves over TLS credproxy verifies: sslmode disable
// is for a loopback upstream only, and require needs the caFile its chain
// is verified against.
func TestDatabaseTLSRules(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_DB_PASSWORD", "sk-test-db-password")
	base := "credentials:\n  db: {source: env, env: CREDPROXY_TEST_DB_PASSWORD}\ndatabases:\n"
	for _, tt := range []struct{ upstream, wantErr string }{
		{"{host: db.internal, database: d, user: u, sslmode: disable}", "test.yaml:4: databases[0].upstream.sslmode: disable is only for a loopback upstream"},
		{"{host: db.internal, database: d, user: u, sslmode: require}", "test.yaml:4: databases[0].upstream.caFile: required with sslmode require"},
		{"{host: 127.0.0.1, database: d, user: u, sslmode: disable}", ""},
		{"{host: db.internal, database: d, user: u}", ""},
	} {
		c, err := Parse("test.yaml", []byte(base+"  - {name: x, listen: 127.0.0.1:5433, credential: db, upstream: "+tt.upstream+"}\n"))
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.upstream, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v, want %q", tt.upstream, err, tt.wantErr)
		case err == nil && len(c.Warnings) != 0:
			t.Errorf("%s: warnings %q, want none", tt.upstream, c.Warnings)
		}
	}
}

// A database listener that is not loopback, without clients:, lets
// whoever reaches it log in without a password: the config says so.
func TestDatabaseListenBeyondLoopbackWarns(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_DB_PASSWORD", "sk-test-db-password")
	base := "credentials:\n  db: {source: env, env: CREDPROXY_TEST_DB_PASSWORD}\ndatabases:\n"
	for listen, want := range map[string]bool{"0.0.0.0:5433": true, "10.0.0.5:5433": true, "127.0.0.1:5433": false, "localhost:5433": false, "[::1]:5433": false} {
		c, err := Parse("test.yaml", []byte(base+"  - {name: x, listen: \""+listen+"\", credential: db, upstream: {host: 127.0.0.1, database: d, user: u, sslmode: disable}}\n"))
		if err != nil {
			t.Fatalf("%s: %v", listen, err)
		}
		got := strings.Contains(strings.Join(c.Warnings, "\n"), "not loopback, and clients: is not set")
		if got != want {
			t.Errorf("listen %s: warned %v, want %v (%q)", listen, got, want, c.Warnings)
		}
	}
}
