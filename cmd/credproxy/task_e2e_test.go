package main

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/internal/vaulttest"
	"github.com/credproxy/credproxy/lease/leasetest"
	"github.com/credproxy/credproxy/proxy"
)

// taskRules: two `scope: task` credentials from Vault's database engine,
// each injected as Basic credentials that the upstream logs in to
// PostgreSQL with.
const taskRules = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
identity: test-agent
upstream: {caFiles: [upstream.pem]}
sources:
  vault: {type: vault, address: "%[1]s", auth: {method: token, tokenFile: vault-token}}
credentials:
  reports: {source: vault, path: database/creds/reports, scope: task, ttl: 15m, maxTTL: 1h}
  migrations: {source: vault, path: database/creds/migrations, scope: task, ttl: 30m, maxTTL: 1h, autoRenew: true}
rules:
  - name: reports
    hosts: ["%[2]s"]
    paths: [/reports/]
    credential: reports
    inject: {header: Authorization, value: '{{ basic .Data.username .Data.password }}'}
  - name: migrations
    hosts: ["%[2]s"]
    paths: [/migrate/]
    credential: migrations
    inject: {header: Authorization, value: '{{ basic .Data.username .Data.password }}'}
`

// taskEnv is credproxy (real time) in front of a real Vault whose database
// engine makes PostgreSQL roles "reports" and "migrations", and an HTTPS
// upstream that accepts a request only if its Basic credentials log in.
type taskEnv struct {
	*vaultEnv
	caFile  string // credproxy's CA certificate
	mu      sync.Mutex
	headers []http.Header // every request the upstream saw
}

func newTaskEnv(t *testing.T) *taskEnv {
	t.Helper()
	return newTaskEnvWith(t, taskRules, serveOptions{})
}

// newTaskEnvWith is newTaskEnv on another config (taskRules' shape: %[1]s
// Vault's address, %[2]s the upstream) and serve options (a fake clock).
func newTaskEnvWith(t *testing.T, rules string, o serveOptions) *taskEnv {
	t.Helper()
	vs := vaulttest.Start(t)
	vs.EnablePostgres(t, "reports", time.Hour, 2*time.Hour)
	vs.EnablePostgres(t, "migrations", time.Hour, 2*time.Hour)
	e := &taskEnv{vaultEnv: &vaultEnv{vs: vs, dir: t.TempDir()}}
	e.up = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.headers = append(e.headers, r.Header.Clone())
		e.mu.Unlock()
		e.checkCredentials(w, r)
	}))
	t.Cleanup(e.up.Close)
	os.WriteFile(filepath.Join(e.dir, "upstream.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.up.Certificate().Raw}), 0o600)
	os.WriteFile(filepath.Join(e.dir, "vault-token"), []byte(vs.RootToken+"\n"), 0o600)
	writeAdminToken(t, e.dir)
	cfgFile := filepath.Join(e.dir, "rules.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, rules, vs.Addr, strings.TrimPrefix(e.up.URL, "https://")), 0o600)
	cfg := mustLoad(t, cfgFile)
	e.served = startServeWith(t, cfg, o)
	e.client = agent(t, e.proxy, cfg.CA.Cert)
	e.caFile = cfg.CA.Cert
	return e
}

// request sends GET path through credproxy in task ("" for no header).
func (e *taskEnv) request(t *testing.T, path, task string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.up.URL+path, nil)
	if task != "" {
		req.Header.Set(proxy.TaskHeader, task)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// control calls the control API with the admin token and a JSON body.
func (e *taskEnv) control(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.admin+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *taskEnv) begin(t *testing.T, body string) string {
	t.Helper()
	code, resp := e.control(t, "POST", "/tasks", body)
	var in struct{ ID string }
	if err := json.Unmarshal([]byte(resp), &in); code != http.StatusCreated || err != nil || in.ID == "" {
		t.Fatalf("POST /tasks %s: %d %s, want 201 with an id", body, code, resp)
	}
	return in.ID
}

// vaultLeases counts the leases Vault holds under database/creds/role.
func (e *taskEnv) vaultLeases(t *testing.T, role string) int {
	t.Helper()
	s, err := e.vs.Client.Logical().List("sys/leases/lookup/database/creds/" + role)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		return 0
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys)
}

// wantGone waits until role's PostgreSQL users are dropped and Vault holds
// no lease for it: the assertion is the event, the deadline only generous.
func (e *taskEnv) wantGone(t *testing.T, role string) {
	t.Helper()
	prefix := e.vs.PGUserPrefix(role)
	testutil.WaitFor(t, func() bool { return vaulttest.PGRoleCount(t, prefix) == 0 }, "the "+role+" PostgreSQL role to be dropped")
	if n := e.vaultLeases(t, role); n != 0 {
		t.Errorf("Vault still holds %d leases under database/creds/%s", n, role)
	}
}

func (e *taskEnv) taskHeaderLeaked(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range e.headers {
		if v, ok := h[proxy.TaskHeader]; ok {
			t.Errorf("the upstream saw %s: %q", proxy.TaskHeader, v)
		}
	}
}

// Scoped block: a task begun through the control API holds a PostgreSQL
// role only between its begin and its end.
func TestTaskScopedBlockWithVaultDatabaseCredentials(t *testing.T) {
	e := newTaskEnv(t)
	prefix := e.vs.PGUserPrefix("reports")
	if code, body := e.request(t, "/reports/q0", ""); code != http.StatusForbidden || !strings.Contains(body, "task-required") {
		t.Fatalf("request before any task: %d %s, want 403 task-required", code, body)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 0 {
		t.Fatalf("%d roles before any task, want 0", n)
	}

	id := e.begin(t, `{"purpose":"quarterly report","ttl":"15m"}`)
	for i, task := range []string{id, id, ""} { // "": the agent's one open task
		if code, body := e.request(t, fmt.Sprintf("/reports/q%d", i+1), task); code != http.StatusOK {
			t.Fatalf("request %d in the task: %d %q (the upstream logs in to PostgreSQL with the injected credentials)", i+1, code, body)
		}
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 1 {
		t.Fatalf("%d roles during the task, want 1", n)
	}
	if n := e.vaultLeases(t, "reports"); n != 1 {
		t.Fatalf("%d Vault leases during the task, want 1", n)
	}
	if code, body := e.control(t, "DELETE", "/tasks/"+id, ""); code != http.StatusOK || !strings.Contains(body, `"state":"ended"`) {
		t.Fatalf("DELETE /tasks/%s: %d %s, want 200 ended", id, code, body)
	}
	e.wantGone(t, "reports")
	if code, body := e.request(t, "/reports/q4", id); code != http.StatusForbidden || !strings.Contains(body, "task-not-open") {
		t.Fatalf("request in the ended task: %d %s, want 403 task-not-open", code, body)
	}
	e.taskHeaderLeaked(t)
	audit := e.audit.String()
	if got := testutil.AuditEvents(audit); got != "lease.created,lease.revoked" {
		t.Errorf("audit events %s, want lease.created,lease.revoked", got)
	}
	for _, want := range []string{`"reason":"task_end"`, `"task":"` + id + `"`, `"purpose":"quarterly report"`, `"source_lease_id":"database/creds/reports/`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %s:\n%s", want, audit)
		}
	}
}

// Request and forget: a task the agent never ends (a single API call, 5m)
// ends at its TTL, on credproxy's clock (a fake one here), and takes its
// PostgreSQL role with it.
func TestTaskRequestAndForgetExpiresAtItsTTL(t *testing.T) {
	clock := leasetest.NewClock(time.Now())
	e := newTaskEnvWith(t, taskRules, serveOptions{Clock: clock})
	prefix := e.vs.PGUserPrefix("reports")
	id := e.begin(t, `{"purpose":"one report","ttl":"5m"}`)
	if code, body := e.request(t, "/reports/q1", id); code != http.StatusOK {
		t.Fatalf("request in the task: %d %q", code, body)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 1 {
		t.Fatalf("%d roles during the task, want 1", n)
	}
	clock.Advance(4 * time.Minute) // inside the TTL: nothing ends
	if code, body := e.request(t, "/reports/q2", id); code != http.StatusOK {
		t.Fatalf("request 4m into a 5m task: %d %q", code, body)
	}
	clock.Advance(time.Minute) // the TTL: the agent never said it was done
	e.wantGone(t, "reports")
	testutil.WaitFor(t, func() bool { return strings.Contains(e.audit.String(), `"reason":"task_expired"`) }, "the task_expired revocation in the audit")
	if code, body := e.request(t, "/reports/q3", id); code != http.StatusForbidden || !strings.Contains(body, "task-not-open") {
		t.Errorf("request in the expired task: %d %s, want 403 task-not-open", code, body)
	}
	if got := testutil.AuditEvents(e.audit.String()); got != "lease.created,lease.revoked" {
		t.Errorf("audit events %s, want one lease created and revoked", got)
	}
}

// longTaskRules: a task credential whose Vault lease lives 2s and is
// renewed 1s before its end while used.
const longTaskRules = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
identity: test-agent
upstream: {caFiles: [upstream.pem]}
sources:
  vault: {type: vault, address: "%[1]s", auth: {method: token, tokenFile: vault-token}}
credentials:
  migrations: {source: vault, path: database/creds/migrations, scope: task, ttl: 2s, maxTTL: 1h, autoRenew: true, renewBeforeExpiry: 1s}
rules:
  - name: migrations
    hosts: ["%[2]s"]
    paths: [/migrate/]
    credential: migrations
    inject: {header: Authorization, value: '{{ basic .Data.username .Data.password }}'}
`

// Renewable long task: a lease of 2s renewed for 6s of work, on a fake
// clock moved a second at a time; each renewal is a real Vault renewal the
// test waits for (an event) before time moves on. The lease is never
// expired or replaced, every request logs in to PostgreSQL, and the
// renewals are audited with the task.
func TestTaskRenewableLongTask(t *testing.T) {
	clock := leasetest.NewClock(time.Now())
	e := newTaskEnvWith(t, longTaskRules, serveOptions{Clock: clock})
	id := e.begin(t, `{"purpose":"migration","ttl":"30m","credentials":["migrations"]}`)
	for i := 1; i <= 6; i++ {
		if code, body := e.request(t, fmt.Sprintf("/migrate/%03d", i), id); code != http.StatusOK {
			t.Fatalf("request %d of the long task: %d %q", i, code, body)
		}
		clock.Advance(time.Second) // the renewal point: 1s before the 2s lease ends
		testutil.WaitFor(t, func() bool { return strings.Count(e.audit.String(), `"event":"lease.renewed"`) >= i },
			fmt.Sprintf("renewal %d", i))
	}
	audit := e.audit.String()
	if n := strings.Count(audit, `"event":"lease.created"`); n != 1 {
		t.Errorf("%d leases created over the task, want 1 (renewed, never replaced):\n%s", n, audit)
	}
	if strings.Contains(audit, `"event":"lease.expired"`) || strings.Contains(audit, `"event":"lease.failed"`) {
		t.Errorf("a lease expired or failed during the task:\n%s", audit)
	}
	if n := strings.Count(audit, `"task":"`+id+`"`); n < 7 {
		t.Errorf("%d audit events name the task, want the creation and every renewal:\n%s", n, audit)
	}
	if code, body := e.control(t, "DELETE", "/tasks/"+id, ""); code != http.StatusOK {
		t.Fatalf("DELETE /tasks/%s: %d %s", id, code, body)
	}
	e.wantGone(t, "migrations")
}

// Multiple credentials: a task that names two is given both at begin, and
// ending it revokes both.
func TestTaskMultipleVaultCredentialsRevokedTogether(t *testing.T) {
	e := newTaskEnv(t)
	id := e.begin(t, `{"purpose":"migrate reports","ttl":"30m","credentials":["reports","migrations"]}`)
	for _, role := range []string{"reports", "migrations"} {
		if n := vaulttest.PGRoleCount(t, e.vs.PGUserPrefix(role)); n != 1 {
			t.Fatalf("%d %s roles right after begin, want 1 (acquired at begin)", n, role)
		}
	}
	for _, p := range []string{"/reports/q", "/migrate/001"} {
		if code, body := e.request(t, p, id); code != http.StatusOK {
			t.Fatalf("GET %s in the task: %d %q", p, code, body)
		}
	}
	code, body := e.control(t, "GET", "/leases", "")
	if code != http.StatusOK || strings.Count(body, `"task":"`+id+`"`) != 2 {
		t.Fatalf("GET /leases: %d %s, want two leases of the task", code, body)
	}
	if code, body := e.control(t, "DELETE", "/tasks/"+id, ""); code != http.StatusOK {
		t.Fatalf("DELETE /tasks/%s: %d %s", id, code, body)
	}
	e.wantGone(t, "reports")
	e.wantGone(t, "migrations")
	if n := strings.Count(e.audit.String(), `"reason":"task_end"`); n != 2 {
		t.Errorf("%d task_end revocations in the audit, want 2:\n%s", n, e.audit.String())
	}
	e.taskHeaderLeaked(t)
}

// The README's shell example, with curl: begin a task on the control API,
// send a request in it through credproxy, end it.
func TestTaskScopedBlockWithCurl(t *testing.T) {
	e := newTaskEnv(t)
	admin, auth := "http://"+e.admin, "Authorization: Bearer "+adminToken
	curl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("curl", append([]string{"-sS", "-f", "--max-time", "30"}, args...)...).Output()
		if err != nil {
			t.Fatalf("curl %q: %v", args, err)
		}
		return string(out)
	}
	var task struct{ ID string }
	begun := curl("-H", auth, "-H", "Content-Type: application/json",
		"-d", `{"purpose":"quarterly report","ttl":"15m"}`, admin+"/tasks")
	if err := json.Unmarshal([]byte(begun), &task); err != nil || task.ID == "" {
		t.Fatalf("POST /tasks with curl: %s (%v)", begun, err)
	}
	if out := curl("--proxy", "http://"+e.proxy, "--cacert", e.caFile, "-H", proxy.TaskHeader+": "+task.ID,
		e.up.URL+"/reports/q1"); out != "ok" {
		t.Fatalf("request in the task with curl: %q, want ok", out)
	}
	if n := vaulttest.PGRoleCount(t, e.vs.PGUserPrefix("reports")); n != 1 {
		t.Fatalf("%d roles during the task, want 1", n)
	}
	curl("-H", auth, "-X", "DELETE", admin+"/tasks/"+task.ID)
	e.wantGone(t, "reports")
	e.taskHeaderLeaked(t)
}
