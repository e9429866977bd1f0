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
