package main

import (
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/internal/vaulttest"
)

// vaultEnv is a real Vault dev server with PostgreSQL behind its database
// engine, an HTTPS upstream that accepts a request only if its Basic
// credentials log in to PostgreSQL (or its Bearer is the current KV value),
// and credproxy in front.
type vaultEnv struct {
	vs      *vaulttest.Server
	up      *httptest.Server
	dir     string
	kvWant  atomic.Value // string: the Bearer value the upstream accepts ("" any sk-test-kv-*)
	kvSeen  atomic.Value // string: the last Bearer value it saw
	*served              // credproxy: proxy and admin addresses, audit trail, shutdown
	client  *http.Client
}

const vaultRules = `
listen: 127.0.0.1:0
admin: 127.0.0.1:0
identity: test-agent
upstream: {caFiles: [upstream.pem]}
sources:
  vault: {type: vault, address: "%[1]s", auth: {method: token, tokenFile: vault-token}}
credentials:
  reports: {source: vault, path: database/creds/%[3]s, ttl: 1m, maxTTL: 1h, renewBeforeExpiry: 20s, idleTimeout: %[4]s}
  openai: {source: vault, path: secret/data/openai, field: api_key, ttl: 2s, renewBeforeExpiry: 1s, idleTimeout: 1m}
rules:
  - name: reports
    hosts: ["%[2]s"]
    paths: [/reports/]
    credential: reports
    inject: {header: Authorization, value: '{{ basic .Data.username .Data.password }}'}
  - name: openai
    hosts: ["%[2]s"]
    paths: [/v1/]
    credential: openai
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

func newVaultEnv(t *testing.T, role, idle string) *vaultEnv {
	t.Helper()
	return newVaultEnvOn(t, vaulttest.Start(t), role, idle, "")
}

// newVaultEnvOn puts credproxy in front of vs, logging in with token ("" for root).
func newVaultEnvOn(t *testing.T, vs *vaulttest.Server, role, idle, token string) *vaultEnv {
	t.Helper()
	e := &vaultEnv{vs: vs, dir: t.TempDir()}
	e.kvWant.Store("sk-test-kv-1")
	e.vs.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-kv-1"})
	e.up = httptest.NewTLSServer(http.HandlerFunc(e.checkCredentials))
	t.Cleanup(e.up.Close)
	os.WriteFile(filepath.Join(e.dir, "upstream.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.up.Certificate().Raw}), 0o600)
	if token == "" {
		token = e.vs.RootToken
	}
	os.WriteFile(filepath.Join(e.dir, "vault-token"), []byte(token+"\n"), 0o600)
	cfgFile := filepath.Join(e.dir, "rules.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, vaultRules, e.vs.Addr, strings.TrimPrefix(e.up.URL, "https://"), role, idle), 0o600)
	cfg := mustLoad(t, cfgFile)
	e.served = startServe(t, cfg)
	e.client = agent(t, e.proxy, cfg.CA.Cert)
	return e
}

func (e *vaultEnv) checkCredentials(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/v1/") {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		e.kvSeen.Store(got)
		if want := e.kvWant.Load().(string); got != want && (want != "" || !strings.HasPrefix(got, "sk-test-kv-")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
		return
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		http.Error(w, "no basic credentials", http.StatusUnauthorized)
		return
	}
	if err := vaulttest.PGLogin(user, pass); err != nil {
		http.Error(w, "postgres login failed", http.StatusUnauthorized)
		return
	}
	io.WriteString(w, "ok")
}

func (e *vaultEnv) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return get(t, e.client, e.up.URL+path)
}

func TestVaultDynamicLeaseLivesOnlyWhileUsed(t *testing.T) {
	e := newVaultEnv(t, "readonly", "500ms")
	e.vs.EnablePostgres(t, "readonly", time.Minute, time.Hour)
	prefix := e.vs.PGUserPrefix("readonly")

	if code, body := e.get(t, "/reports/q1"); code != 200 {
		t.Fatalf("first request: %d %q (the upstream logs in to PostgreSQL with the injected credentials)", code, body)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 1 {
		t.Fatalf("%d PostgreSQL roles while the lease is live, want 1", n)
	}
	testutil.WaitFor(t, func() bool { return vaulttest.PGRoleCount(t, prefix) == 0 }, "the idle lease's role to be dropped")
	if !strings.Contains(e.audit.String(), `"reason":"idle"`) || !strings.Contains(e.audit.String(), `"source_lease_id":"database/creds/readonly/`) {
		t.Errorf("audit should show an idle revocation carrying Vault's lease id:\n%s", e.audit.String())
	}
	if code, _ := e.get(t, "/reports/q2"); code != 200 {
		t.Fatalf("request after idle revocation: %d", code)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 1 {
		t.Fatalf("%d roles after re-acquiring, want 1", n)
	}
	if err := e.shutdown(t); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 0 {
		t.Errorf("%d roles left after shutdown, want 0", n)
	}
	leases, err := e.vs.Client.Logical().List("sys/leases/lookup/database/creds/readonly")
	if err != nil {
		t.Fatal(err)
	}
	if leases != nil && len(leases.Data["keys"].([]any)) != 0 {
		t.Errorf("Vault still holds leases after shutdown: %v", leases.Data["keys"])
	}
}

// The role's max_ttl is shorter than credproxy asks for: the cap is a hard
// deadline, so credproxy rotates to a new lease before it, and no request fails.
func TestVaultCappedLeaseRotatesWithoutFailedRequests(t *testing.T) {
	e := newVaultEnv(t, "capped", "1m")
	e.vs.EnablePostgres(t, "capped", 2*time.Second, 3*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for ; time.Now().Before(deadline); n++ {
		if code, body := e.get(t, fmt.Sprintf("/reports/%d", n)); code != 200 {
			t.Fatalf("request %d failed during rotation: %d %q", n, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(e.audit.String(), `"reason":"rotated"`) {
		t.Errorf("no rotation in %d requests over 5s with a 2s capped lease:\n%s", n, e.audit.String())
	}
}

func TestVaultKVValueChangeIsPickedUpOnRenewal(t *testing.T) {
	e := newVaultEnv(t, "readonly", "1m")
	if code, _ := e.get(t, "/v1/models"); code != 200 {
		t.Fatalf("KV injection: %d", code)
	}
	// The upstream accepts both values, so no 401 forces a new lease: the
	// new value can only arrive through a renewal, which re-reads Vault.
	e.kvWant.Store("")
	e.vs.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-kv-2"})
	testutil.WaitFor(t, func() bool {
		code, _ := e.get(t, "/v1/models")
		return code == 200 && e.kvSeen.Load() == "sk-test-kv-2"
	}, "the changed KV value to be injected")
	audit := e.audit.String()
	if !strings.Contains(audit, `"event":"lease.renewed"`) || strings.Count(audit, `"event":"lease.created"`) != 1 {
		t.Errorf("the new value should arrive through a renewal of the one lease:\n%s", audit)
	}
}

func TestVaultPolicyDenialIsA502NamingThePath(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Policy(t, "nothing", `path "secret/data/other" { capabilities = ["read"] }`)
	e := newVaultEnvOn(t, vs, "readonly", "1m", vs.Token(t, time.Hour, "nothing"))
	code, body := e.get(t, "/v1/models")
	if code != http.StatusBadGateway || !strings.Contains(body, "secret/data/openai") || !strings.Contains(body, "permission denied") {
		t.Fatalf("got %d %s; want 502 naming the path and the denial", code, body)
	}
}

func TestVaultOutageIsA502AndRecovers(t *testing.T) {
	e := newVaultEnv(t, "readonly", "1m")
	e.vs.Stop()
	if code, body := e.get(t, "/v1/models"); code != http.StatusBadGateway || !strings.Contains(body, "openai") {
		t.Fatalf("with Vault down: %d %s; want 502 naming the credential", code, body)
	}
	e.vs.Restart(t)
	e.vs.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-kv-1"})
	testutil.WaitFor(t, func() bool { code, _ := e.get(t, "/v1/models"); return code == 200 }, "recovery once Vault is back")
}
