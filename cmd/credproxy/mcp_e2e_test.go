package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/proxy"
)

// mcpTaskKey is the task-scoped credential's value (the fixture's key, from
// $CREDPROXY_CMD_TEST_KEY): the upstream wants it, no MCP answer may show it.
const mcpTaskKey = testKey

// mcpRules: one `scope: task` credential for an HTTPS upstream.
const mcpRules = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
identity: test-agent
upstream: {caFiles: [upstream.pem]}
credentials:
  reports: {source: env, env: CREDPROXY_CMD_TEST_KEY, scope: task, ttl: 15m, maxTTL: 1h}
rules:
  - name: reports
    hosts: ["%s"]
    credential: reports
    purpose: reports
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

// newMCPEnv runs credproxy (in process, real listeners) with mcpRules in
// front of an upstream that wants mcpTaskKey.
func newMCPEnv(t *testing.T) (*fixture, *served, *http.Client) {
	t.Helper()
	f := newFixture(t, "")
	os.WriteFile(f.cfg, fmt.Appendf(nil, mcpRules, strings.TrimPrefix(f.up.URL, "https://")), 0o600)
	cfg := mustLoad(t, f.cfg)
	s := startServe(t, cfg)
	return f, s, agent(t, s.proxy, cfg.CA.Cert)
}

// withToken adds the admin token to every request of an MCP client.
type withToken struct{ base http.RoundTripper }

func (w withToken) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+adminToken)
	return w.base.RoundTrip(r)
}

func mcpConnect(t *testing.T, tr mcp.Transport) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "credproxy-e2e", Version: "1"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("MCP connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// mcpCall calls tool and decodes its structured output into out (nil to
// skip); a tool error fails the test.
func mcpCall(t *testing.T, cs *mcp.ClientSession, tool string, args, out any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	all, _ := json.Marshal(res)
	if res.IsError {
		t.Fatalf("%s(%v): tool error %s", tool, args, all)
	}
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %s: %v", tool, b, err)
		}
	}
	if strings.Contains(string(all), mcpTaskKey) {
		t.Errorf("%s shows the credential's value: %s", tool, all)
	}
	return string(all)
}

// A task through MCP, end to end: the SDK's client on credproxy's /mcp
// begins a task, a request through the proxy in the task gets the
// credential, end_task revokes it (task_end) and the task's id stops
// working; no MCP answer holds the value.
func TestMCPTaskOverStreamableHTTP(t *testing.T) {
	f, s, client := newMCPEnv(t)
	cs := mcpConnect(t, &mcp.StreamableClientTransport{Endpoint: "http://" + s.admin + "/mcp",
		HTTPClient: &http.Client{Transport: withToken{http.DefaultTransport}}, MaxRetries: -1})
	mcpTaskFlow(t, f, s, client, cs)
}

func mcpTaskFlow(t *testing.T, f *fixture, s *served, client *http.Client, cs *mcp.ClientSession) {
	t.Helper()
	tools, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if slices.Sort(names); fmt.Sprint(names) != "[begin_task end_task explain list_credentials list_leases list_tasks]" {
		t.Errorf("tools %v", names)
	}
	if out := mcpCall(t, cs, "list_credentials", nil, nil); !strings.Contains(out, `"name":"reports"`) || !strings.Contains(out, `"scope":"task"`) {
		t.Errorf("list_credentials: %s, want reports, scope task", out)
	}
	var ex proxy.Explanation
	mcpCall(t, cs, "explain", map[string]any{"url": f.up.URL + "/q"}, &ex)
	if ex.Action != "inject" || ex.Credential != "reports" || ex.Scope != "task" || ex.Inject != "header Authorization" {
		t.Errorf("explain = %+v, want inject reports (task) into header Authorization", ex)
	}
	if code, body := taskGet(t, client, f.up.URL+"/q0", ""); code != http.StatusForbidden || !strings.Contains(body, "task-required") {
		t.Fatalf("request before begin_task: %d %s, want 403 task-required", code, body)
	}

	var ti struct{ ID, State, TTL string }
	mcpCall(t, cs, "begin_task", map[string]any{"purpose": "mcp e2e", "ttl": "5m"}, &ti)
	if ti.State != "open" || ti.TTL != "5m0s" {
		t.Fatalf("begin_task = %+v, want open 5m", ti)
	}
	if code, body := taskGet(t, client, f.up.URL+"/q1", ti.ID); code != http.StatusOK {
		t.Fatalf("request in the task: %d %s, want 200 (the upstream got the credential)", code, body)
	}
	if out := mcpCall(t, cs, "list_leases", nil, nil); !strings.Contains(out, `"task":"`+ti.ID+`"`) {
		t.Errorf("list_leases: %s, want the task's lease", out)
	}
	mcpCall(t, cs, "end_task", map[string]any{"id": ti.ID}, nil)
	testutil.WaitFor(t, func() bool { return strings.Contains(s.audit.String(), `"reason":"task_end"`) }, "the task's lease revoked (task_end)")
	if code, body := taskGet(t, client, f.up.URL+"/q2", ti.ID); code != http.StatusForbidden || !strings.Contains(body, "task-not-open") {
		t.Errorf("request in the ended task: %d %s, want 403 task-not-open", code, body)
	}
	if out := mcpCall(t, cs, "list_leases", nil, nil); strings.Contains(out, ti.ID) {
		t.Errorf("list_leases after end_task: %s, want no lease of the task", out)
	}
	if got := testutil.AuditEvents(s.audit.String()); got != "lease.created,lease.revoked" {
		t.Errorf("audit events %s, want lease.created,lease.revoked", got)
	}
	if strings.Contains(s.audit.String(), mcpTaskKey) {
		t.Errorf("the audit trail holds the value:\n%s", s.audit.String())
	}
}

func taskGet(t *testing.T, c *http.Client, u, task string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	if task != "" {
		req.Header.Set(proxy.TaskHeader, task)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /mcp on a running credproxy: refused without the token, with a wrong
// one, and with a Host header that is not loopback (DNS rebinding).
func TestMCPRefusedWithoutTokenOrWithForeignHost(t *testing.T) {
	_, s, _ := newMCPEnv(t)
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	for _, tc := range []struct {
		auth, host, problem string
		status              int
	}{
		{"", "", "admin-unauthorized", 401},
		{"Bearer wrong-token", "", "admin-unauthorized", 401},
		{"Bearer " + adminToken, "attacker.example", "admin-host-refused", 403},
		{"Bearer " + adminToken, "", "", 200},
	} {
		req, _ := http.NewRequest("POST", "http://"+s.admin+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		if tc.host != "" {
			req.Host = tc.host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := string(b)
		if resp.StatusCode != tc.status || (tc.problem != "" && (resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(got, tc.problem))) {
			t.Errorf("POST /mcp auth %q host %q: %d %s %s, want %d %s", tc.auth, tc.host, resp.StatusCode, resp.Header.Get("Content-Type"), got, tc.status, tc.problem)
		}
	}
}

// credproxy mcp refuses to start without a usable token file or admin URL,
// saying which flag is wrong and never quoting the file.
func TestMCPSubcommandFlags(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short-token")
	os.WriteFile(short, []byte("sk-test-short\n"), 0o600)
	writeAdminToken(t, dir)
	good := filepath.Join(dir, "admin-token")
	t.Setenv("CREDPROXY_ADMIN_TOKEN_FILE", "")
	t.Setenv("CREDPROXY_ADMIN_URL", "")
	// --config: the admin listener and token file come from the config's
	// admin block, read by the one config loader (its errors name file:line).
	cfgShort := filepath.Join(dir, "short.yaml")
	os.WriteFile(cfgShort, []byte("admin: {listen: 0.0.0.0:9999, tokenFile: short-token}\n"), 0o600)
	cfgBad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(cfgBad, []byte("admin: {listen: 127.0.0.1:9999, tokenFile: admin-token}\nleases: {idleTimeout: soon}\n"), 0o600)
	cfgGood := filepath.Join(dir, "good.yaml")
	os.WriteFile(cfgGood, []byte("admin: {listen: 127.0.0.1:9999, tokenFile: admin-token}\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--token-file (or $CREDPROXY_ADMIN_TOKEN_FILE) is required"},
		{[]string{"--token-file", filepath.Join(dir, "absent")}, "--token-file: cannot read"},
		{[]string{"--token-file", short}, "--token-file: token is 13 bytes"},
		{[]string{"--token-file", good, "--admin", "127.0.0.1:9464"}, "--admin: admin URL"},
		{[]string{"--token-file", good, "--admin", "http://u:p@127.0.0.1:9464"}, "--admin: admin URL"},
		{[]string{"--config", cfgShort}, "--config: " + cfgShort + ":1: admin.tokenFile: token is 13 bytes"},
		{[]string{"--config", cfgBad}, "--config: " + cfgBad + ":2: leases.idleTimeout"},
		{[]string{"--config", cfgGood, "--admin", "127.0.0.1:1"}, "--admin: admin URL"}, // a flag wins over the config
	} {
		var out, errb bytes.Buffer
		if code := runMain(context.Background(), append([]string{"mcp"}, tc.args...), &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("credproxy mcp %v: exit %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
		if strings.Contains(errb.String(), "sk-test-short") || strings.Contains(errb.String(), adminToken) {
			t.Errorf("credproxy mcp %v: stderr quotes a token: %q", tc.args, errb.String())
		}
	}
}

// --config reaches the admin listener it names; an unspecified host is
// reached on loopback.
func TestMCPAdminURLOfConfig(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:9464": "http://127.0.0.1:9464",
		"0.0.0.0:9464":   "http://127.0.0.1:9464",
		"[::]:9464":      "http://127.0.0.1:9464",
		":9464":          "http://127.0.0.1:9464",
		"[::1]:9464":     "http://[::1]:9464",
		"localhost:9464": "http://localhost:9464",
	} {
		if got := adminURLOf(listen); got != want {
			t.Errorf("adminURLOf(%q) = %q, want %q", listen, got, want)
		}
	}
}
