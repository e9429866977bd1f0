package rules

import (
	"slices"
	"strings"
	"testing"
)

const reloadBase = `
listen: 127.0.0.1:3128
admin: 127.0.0.1:9464
sources:
  vault: {type: vault, address: http://127.0.0.1:8200, auth: {method: token, token: t}}
credentials:
  db: {source: vault, path: database/creds/ro, ttl: 5m}
  key: {source: env, env: CREDPROXY_TEST_KEY}
rules:
  - {name: r, hosts: [api.example.test], credential: key, inject: {header: Authorization, value: "Bearer {{ .Value }}"}}
`

func parseReload(t *testing.T, yaml string) *Config {
	t.Helper()
	t.Setenv("CREDPROXY_TEST_KEY", "sk-test-reload")
	c, err := Parse("/tmp/reload.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestCredentialDefinition(t *testing.T) {
	base := parseReload(t, reloadBase)
	for _, tc := range []struct {
		name, from, to string
		changes        []string // credentials whose definition changes
	}{
		{"lines moved", "\ncredentials:", "\n\n\n# a comment\ncredentials:", nil},
		{"rule changed", "api.example.test", "other.example.test", nil},
		{"path", "database/creds/ro", "database/creds/rw", []string{"db"}},
		{"ttl", "ttl: 5m", "ttl: 6m", []string{"db"}},
		{"source address", "http://127.0.0.1:8200", "http://127.0.0.1:8201", []string{"db"}},
		{"source auth", "token: t}", "token: u}", []string{"db"}},
		{"env var", "env: CREDPROXY_TEST_KEY", "env: CREDPROXY_TEST_KEY2", []string{"key"}},
		{"lease policy", "admin: 127.0.0.1:9464", "admin: 127.0.0.1:9464\nleases: {idleTimeout: 1m}", []string{"db", "key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CREDPROXY_TEST_KEY2", "sk-test-reload-2")
			next := parseReload(t, strings.Replace(reloadBase, tc.from, tc.to, 1))
			var changed []string
			for name := range base.Credentials {
				if base.CredentialDefinition(name) != next.CredentialDefinition(name) {
					changed = append(changed, name)
				}
			}
			slices.Sort(changed)
			if !slices.Equal(changed, tc.changes) {
				t.Errorf("changed definitions %q, want %q", changed, tc.changes)
			}
		})
	}
	if d := base.CredentialDefinition("nope"); d != "" {
		t.Errorf("definition of an unknown credential = %q, want empty", d)
	}
	if d := base.CredentialDefinition("db"); len(d) != 32 {
		t.Errorf("definition %q is not a 32-hex digest", d)
	}
}

func TestRestartOnly(t *testing.T) {
	running := parseReload(t, reloadBase)
	same := parseReload(t, reloadBase)
	if got, err := RestartOnly(running, same); len(got) != 0 || err != nil {
		t.Errorf("RestartOnly on an unchanged file = %q, %v, want none", got, err)
	}
	changed := parseReload(t, strings.NewReplacer(
		"listen: 127.0.0.1:3128", "listen: 127.0.0.1:3129\nca: {cert: /tmp/other-ca.pem, key: /tmp/other-ca-key.pem}\nlimits: {maxInflight: 7}",
		"api.example.test", "new.example.test",
	).Replace(reloadBase))
	got, err := RestartOnly(running, changed)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"listen", "ca", "limits"}; !slices.Equal(got, want) {
		t.Errorf("RestartOnly = %q, want %q", got, want)
	}
	if changed.Listen != running.Listen || changed.CA != running.CA || changed.Limits != running.Limits {
		t.Errorf("restart-only settings not kept: listen %s ca %+v limits %+v", changed.Listen, changed.CA, changed.Limits)
	}
	if changed.Rules[0].Hosts[0] != "new.example.test" {
		t.Errorf("the new rules were not kept: hosts %q", changed.Rules[0].Hosts)
	}
}

// A database listener runs from start: a reload keeps the running entries,
// and refuses a file that drops the credential one of them logs in with.
func TestRestartOnlyDatabases(t *testing.T) {
	const db = "databases:\n  - {name: reports, listen: 127.0.0.1:5433, upstream: {host: 127.0.0.1, database: reports, sslmode: disable}, credential: db}\n"
	running := parseReload(t, reloadBase+db)
	moved := parseReload(t, reloadBase+strings.Replace(db, "5433", "5434", 1))
	got, err := RestartOnly(running, moved)
	if err != nil || !slices.Equal(got, []string{"databases"}) {
		t.Fatalf("RestartOnly = %q, %v; want databases named as restart-only", got, err)
	}
	if moved.Databases[0].Listen != "127.0.0.1:5433" {
		t.Errorf("the running listener was not kept: %s", moved.Databases[0].Listen)
	}
	gone := parseReload(t, strings.Replace(reloadBase, "  db: {source: vault, path: database/creds/ro, ttl: 5m}\n", "", 1))
	if _, err := RestartOnly(running, gone); err == nil || !strings.Contains(err.Error(), "databases.reports.credential") {
		t.Errorf("RestartOnly with the database's credential removed: %v; want an error naming databases.reports.credential", err)
	}
}

// The transparent listener runs from start: a reload keeps it, and refuses
// clients: while it runs (its connections carry no Proxy-Authorization).
func TestRestartOnlyTransparent(t *testing.T) {
	running := parseReload(t, reloadBase+"transparent: {listen: 127.0.0.1:15001}\n")
	off := parseReload(t, reloadBase)
	got, err := RestartOnly(running, off)
	if err != nil || !slices.Equal(got, []string{"transparent"}) || off.Transparent.Listen != "127.0.0.1:15001" {
		t.Fatalf("RestartOnly = %q, %v, listen %q; want transparent kept as restart-only", got, err, off.Transparent.Listen)
	}
	t.Setenv("CREDPROXY_TEST_CLIENT_TOKEN", "sk-test-client-token-0123456789")
	withClients := parseReload(t, reloadBase+"clients:\n  - {name: a, tokenEnv: CREDPROXY_TEST_CLIENT_TOKEN}\n")
	if _, err := RestartOnly(running, withClients); err == nil || !strings.Contains(err.Error(), "clients") {
		t.Errorf("RestartOnly adding clients under a running transparent listener: %v; want refused", err)
	}
}
