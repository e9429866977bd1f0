package main

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
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
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
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

// newVaultEnv puts credproxy, on real time, in front of a new Vault.
func newVaultEnv(t *testing.T, role, idle string) *vaultEnv {
	t.Helper()
	return newVaultEnvOn(t, vaulttest.Start(t), role, idle, "", serveOptions{})
}

// newVaultEnvOn puts credproxy in front of vs, logging in with token ("" for
// root). o.Clock drives leases' time (nil: real time).
func newVaultEnvOn(t *testing.T, vs *vaulttest.Server, role, idle, token string, o serveOptions) *vaultEnv {
	t.Helper()
	vs.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-kv-1"})
	if token == "" {
		token = vs.RootToken
	}
	e := newVaultEnvAt(t, vs.Addr, role, idle, token, o)
	e.vs = vs
	return e
}

// newVaultEnvAt puts credproxy in front of whatever answers at addr (a real
// Vault, or a fake one), logging in with token.
func newVaultEnvAt(t *testing.T, addr, role, idle, token string, o serveOptions) *vaultEnv {
	t.Helper()
	e := &vaultEnv{dir: t.TempDir()}
	e.kvWant.Store("sk-test-kv-1")
	e.up = httptest.NewTLSServer(http.HandlerFunc(e.checkCredentials))
	t.Cleanup(e.up.Close)
	os.WriteFile(filepath.Join(e.dir, "upstream.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.up.Certificate().Raw}), 0o600)
	os.WriteFile(filepath.Join(e.dir, "vault-token"), []byte(token+"\n"), 0o600)
	writeAdminToken(t, e.dir)
	cfgFile := filepath.Join(e.dir, "rules.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, vaultRules, addr, strings.TrimPrefix(e.up.URL, "https://"), role, idle), 0o600)
	cfg := mustLoad(t, cfgFile)
	e.served = startServeWith(t, cfg, o)
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

// The idle timeout runs on a fake clock: the lease ends when the test moves
// the clock past it, never because the machine was slow between two steps.
func TestVaultDynamicLeaseLivesOnlyWhileUsed(t *testing.T) {
	clock := leasetest.NewClock(time.Now())
	e := newVaultEnvOn(t, vaulttest.Start(t), "readonly", "30s", "", serveOptions{Clock: clock})
	e.vs.EnablePostgres(t, "readonly", time.Minute, time.Hour)
	prefix := e.vs.PGUserPrefix("readonly")

	if code, body := e.get(t, "/reports/q1"); code != 200 {
		t.Fatalf("first request: %d %q (the upstream logs in to PostgreSQL with the injected credentials)", code, body)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 1 {
		t.Fatalf("%d PostgreSQL roles while the lease is live, want 1", n)
	}
	clock.Advance(30 * time.Second) // exactly the idle timeout: before the 40s renewal and the 1m expiry
	testutil.WaitFor(t, func() bool { return vaulttest.PGRoleCount(t, prefix) == 0 }, "the idle lease's role to be dropped")
	testutil.WaitFor(t, func() bool { return strings.Contains(e.audit.String(), `"reason":"idle"`) }, "the idle revocation in the audit trail")
	if !strings.Contains(e.audit.String(), `"source_lease_id":"database/creds/readonly/`) {
		t.Errorf("audit should show an idle revocation carrying Vault's lease id:\n%s", e.audit.String())
	}
	if code, _ := e.get(t, "/reports/q2"); code != 200 {
		t.Fatalf("request after idle revocation: %d", code)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 1 {
		t.Fatalf("%d roles after re-acquiring, want 1", n)
	}
	if got := testutil.AuditEvents(e.audit.String()); got != "lease.created,lease.revoked,lease.created" {
		t.Errorf("audit events %s, want lease.created,lease.revoked,lease.created", got)
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

// The role grants a day; credproxy brings the lease down to the
// credential's ttl as soon as it gets it, so a crash leaves a user that
// lives minutes, not a day.
func TestVaultDynamicLeaseIsShortenedToTheCredentialTTL(t *testing.T) {
	e := newVaultEnv(t, "daylong", "1m")
	e.vs.EnablePostgres(t, "daylong", 24*time.Hour, 48*time.Hour)
	if code, body := e.get(t, "/reports/q1"); code != 200 {
		t.Fatalf("request: %d %q", code, body)
	}
	_, leases := e.adminRequest(t, "GET", "/leases", adminToken)
	var infos []lease.Info
	if err := json.Unmarshal([]byte(leases), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("/leases = %s (%v), want one lease", leases, err)
	}
	// ttl: 1m in vaultRules
	if ttl := e.vs.LeaseTTL(t, infos[0].SourceLeaseID); ttl > time.Minute {
		t.Errorf("Vault holds the lease for another %v; want at most the credential's ttl 1m (role default 24h)", ttl)
	}
	if !strings.Contains(e.audit.String(), `"ttl":60`) {
		t.Errorf("audit should record the 60s TTL Vault granted after shortening:\n%s", e.audit.String())
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
	clock := leasetest.NewClock(time.Now())
	e := newVaultEnvOn(t, vaulttest.Start(t), "readonly", "1m", "", serveOptions{Clock: clock})
	if code, _ := e.get(t, "/v1/models"); code != 200 {
		t.Fatalf("KV injection: %d", code)
	}
	// The upstream accepts both values, so no 401 forces a new lease: the
	// new value can only arrive through a renewal, which re-reads Vault.
	e.kvWant.Store("")
	e.vs.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-kv-2"})
	clock.Advance(time.Second) // ttl 2s, renewBeforeExpiry 1s: renewal due
	testutil.WaitFor(t, func() bool { return strings.Contains(e.audit.String(), `"event":"lease.renewed"`) }, "the renewal")
	if code, _ := e.get(t, "/v1/models"); code != 200 || e.kvSeen.Load() != "sk-test-kv-2" {
		t.Fatalf("after the renewal: %d with %v, want 200 with sk-test-kv-2", code, e.kvSeen.Load())
	}
	if got := testutil.AuditEvents(e.audit.String()); got != "lease.created,lease.renewed" {
		t.Errorf("the new value should arrive through a renewal of the one lease; audit events %s", got)
	}
}

func TestVaultPolicyDenialIsA502NamingTheCredential(t *testing.T) {
	vs := vaulttest.Start(t)
	vs.Policy(t, "nothing", `path "secret/data/other" { capabilities = ["read"] }`)
	token := vs.Token(t, time.Hour, "nothing")
	e := newVaultEnvOn(t, vs, "readonly", "1m", token, serveOptions{})
	code, body := e.get(t, "/v1/models")
	detail := credentialUnavailable(t, code, body)
	if code != http.StatusBadGateway || !strings.Contains(detail, "openai") || !strings.Contains(detail, "denied") || strings.Contains(body, token) {
		t.Fatalf("got %d %s; want 502 naming the credential and the denial, and not the token", code, body)
	}
}

// credentialUnavailable checks that body, sent with status code, is the
// problem+json refusal for an unavailable credential (status, title, and an
// error member equal to the detail, for older clients), and returns its
// detail.
func credentialUnavailable(t *testing.T, code int, body string) string {
	t.Helper()
	var p struct {
		Type, Title, Detail, Credential string
		Status                          int
		Error                           *string
	}
	if err := json.Unmarshal([]byte(body), &p); err != nil || p.Type != "urn:credproxy:problem:credential-unavailable" ||
		p.Title == "" || p.Status != code || p.Credential == "" || p.Error == nil || *p.Error != p.Detail {
		t.Errorf("refusal %d %s: want a problem+json body of type urn:credproxy:problem:credential-unavailable "+
			"with a title, status %d, the credential, and error equal to detail", code, body, code)
	}
	return p.Detail
}

func TestVaultOutageIsA502AndRecovers(t *testing.T) {
	e := newVaultEnv(t, "readonly", "1m")
	e.vs.Stop()
	if code, body := e.get(t, "/v1/models"); code != http.StatusBadGateway || !strings.Contains(credentialUnavailable(t, code, body), "openai") {
		t.Fatalf("with Vault down: %d %s; want 502 naming the credential", code, body)
	}
	e.vs.Restart(t)
	e.vs.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-kv-1"})
	testutil.WaitFor(t, func() bool { code, _ := e.get(t, "/v1/models"); return code == 200 }, "recovery once Vault is back")
}

// Something in front of Vault answers with a page quoting the request's
// headers, X-Vault-Token included. The agent gets a 502 with fixed text, and
// the token reaches neither the agent, the log nor the audit trail.
func TestHostileVaultTokenNeverReachesTheAgent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		json   bool
		want   string
	}{
		{"HTML 502", http.StatusBadGateway, false, `store vault unavailable (HTTP 5xx)`},
		{"JSON 403", http.StatusForbidden, true, `access denied by store vault (HTTP 4xx)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const token = "hvs.fake-echo-vault-e2e-token-0123456789"
			fake := vaulttest.StartFakeEchoVault(t, tc.status, tc.json)
			logs := &testutil.SyncBuffer{}
			log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			e := newVaultEnvAt(t, fake.Addr, "readonly", "1m", token, serveOptions{Log: log})
			code, body := e.get(t, "/reports/q1")
			if code != http.StatusBadGateway {
				t.Errorf("through a hostile Vault: %d %s, want 502", code, body)
			}
			if fake.Requests.Load() == 0 {
				t.Fatal("the fake Vault saw no request")
			}
			for name, text := range map[string]string{"502 body": body, "log": logs.String(), "audit": e.audit.String()} {
				if strings.Contains(text, token) {
					t.Errorf("the %s contains the Vault token:\n%s", name, text)
				}
			}
			// Fixed text only: wired through lease.PublicMessage in the proxy.
			if d := credentialUnavailable(t, code, body); d != `credential "reports": `+tc.want {
				t.Errorf("502 body %s, want the detail to be the fixed text %q", body, `credential "reports": `+tc.want)
			}
		})
	}
}
