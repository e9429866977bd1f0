package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/credproxy/credproxy/rules"
)

// A credential added on an oauth2 source that a kept credential already
// uses shares its token source: two would each spend the other's rotating
// refresh token. A changed source gets a new one.
func TestCredSetSharesAKeptOAuth2Source(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "secret"), []byte("sk-test-client-secret\n"), 0o600)
	parse := func(extra, url string) *rules.Config {
		t.Helper()
		cfg, err := rules.Parse(filepath.Join(dir, "rules.yaml"), []byte(`
sources:
  idp: {type: oauth2, tokenURL: "`+url+`", clientID: c, clientSecretFile: secret}
credentials:
  one: {source: idp}
`+extra+`
rules:
  - {name: r, hosts: [api.example.test], credential: one, inject: {header: Authorization, value: "Bearer {{ .Value }}"}}
`))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cs, err := (&credSet{}).next(parse("", "http://127.0.0.1:1/token"), discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	next, err := cs.next(parse("  two: {source: idp}\n", "http://127.0.0.1:1/token"), discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if next.byName["one"].Source != cs.byName["one"].Source {
		t.Error("the unchanged credential one got a new source")
	}
	if next.byName["two"].Source != next.byName["one"].Source {
		t.Error("credential two, added on the same oauth2 source, has a token source of its own")
	}
	moved, err := next.next(parse("  two: {source: idp}\n", "http://127.0.0.1:2/token"), discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if moved.byName["one"].Source == next.byName["one"].Source || moved.byName["one"].Definition == next.byName["one"].Definition {
		t.Error("a changed tokenURL kept the old token source")
	}
	if kept, built, removed := next.diff(moved); kept != 0 || built != 2 || removed != 0 {
		t.Errorf("diff = %d kept, %d built, %d removed; want 0, 2, 0", kept, built, removed)
	}
}

// Every kind of `sources:` entry is built once per definition: a credential
// added on an unchanged Vault source uses the client (and login) the kept
// one has, and a changed entry gets a new client while the old one closes.
func TestCredSetSharesAKeptVaultClient(t *testing.T) {
	dir := t.TempDir()
	parse := func(extra, addr string) *rules.Config {
		t.Helper()
		cfg, err := rules.Parse(filepath.Join(dir, "rules.yaml"), []byte(`
sources:
  vault: {type: vault, address: "`+addr+`", auth: {method: token, token: sk-test-vault-token}}
credentials:
  one: {source: vault, path: secret/data/one, field: key}
`+extra+`
rules:
  - {name: r, hosts: [api.example.test], credential: one, inject: {header: Authorization, value: "Bearer {{ .Value }}"}}
`))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cs, err := (&credSet{}).next(parse("", "http://127.0.0.1:1"), discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	next, err := cs.next(parse("  two: {source: vault, path: secret/data/two, field: key}\n", "http://127.0.0.1:1"), discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := next.byName["two"].client; c == nil || c != cs.byName["one"].client || next.clients["vault"] != c {
		t.Error("credential two, added on the unchanged Vault source, got a client of its own")
	}
	if kept, built, removed := cs.diff(next); kept != 1 || built != 1 || removed != 0 {
		t.Errorf("diff = %d kept, %d built, %d removed; want 1, 1, 0", kept, built, removed)
	}
	moved, err := next.next(parse("  two: {source: vault, path: secret/data/two, field: key}\n", "http://127.0.0.1:2"), discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if moved.clients["vault"] == next.clients["vault"] || moved.byName["one"].client != moved.clients["vault"] {
		t.Error("a changed Vault address kept the old client")
	}
	closed := false
	old := next.clients["vault"]
	inner := old.close
	old.close = func() { closed = true; inner() }
	next.closeUnused(moved)
	if !closed {
		t.Error("the replaced client was not closed")
	}
	moved.closeUnused(nil)
}
