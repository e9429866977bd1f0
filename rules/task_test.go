package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The README's TTL table for tasks is a config that loads, with the TTLs
// and renewal the table gives each kind of work.
func TestREADMETaskTTLTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "## Tasks and the control API")
	if !ok {
		t.Fatal("README.md has no Tasks and the control API section")
	}
	_, block, _ := strings.Cut(after, "```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "vault-token"), []byte("hvs.test-token\n"), 0o600)
	src := "sources:\n  vault: {type: vault, address: \"http://127.0.0.1:8200\", auth: {method: token, tokenFile: vault-token}}\n"
	c, err := Parse(filepath.Join(dir, "rules.yaml"), []byte(src+block))
	if err != nil {
		t.Fatalf("the README's task TTL table: %v", err)
	}
	if c.Leases.MaxTTL != 8*time.Hour {
		t.Errorf("leases.maxTTL %v, want 8h (the longest task)", c.Leases.MaxTTL)
	}
	for name, want := range map[string]struct {
		ttl, maxTTL time.Duration
		renew       bool
	}{
		"openai-call": {5 * time.Minute, 5 * time.Minute, false},
		"reports":     {15 * time.Minute, 15 * time.Minute, false},
		"migrations":  {30 * time.Minute, 2 * time.Hour, true},
		"batch":       {time.Hour, 8 * time.Hour, true},
	} {
		cr := c.Credentials[name]
		if cr == nil || cr.Scope != ScopeTask || cr.Policy.DefaultTTL != want.ttl || cr.Policy.MaxTTL != want.maxTTL || cr.Policy.AutoRenew != want.renew {
			t.Errorf("credential %s = %+v, want scope task, ttl %v, maxTTL %v, autoRenew %v", name, cr, want.ttl, want.maxTTL, want.renew)
		}
	}
}

func TestScopeTaskIsAcceptedAndOthersRefused(t *testing.T) {
	for scope, want := range map[string]string{
		"task":   "",
		"shared": "",
		"tasks":  `credentials.c.scope: must be shared, identity or task, not "tasks"`,
	} {
		_, err := Parse("rules.yaml", []byte("credentials:\n  c: {source: env, env: X, scope: "+scope+"}\n"))
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("scope %s: %v, want %q", scope, err, want)
		}
	}
}
