package clients

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credproxy/credproxy/internal/testutil"
)

// mcpRules: the openai key as a `scope: task` credential, given only to a
// request in a task begun through the MCP tools.
const mcpRules = `credentials:
  openai: {source: env, env: CP_OPENAI_KEY, scope: task, ttl: 15m, maxTTL: 1h}
rules:
  - name: openai
    hosts: [api.openai.com]
    credential: openai
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

// `credproxy mcp`, the built binary as an MCP server over stdio (as an
// agent that launches MCP servers as subprocesses runs it), with the Go
// SDK's CommandTransport, against a running credproxy: the tools call its
// admin API. It runs with the agent's environment (HTTPS_PROXY names
// credproxy: the admin API must not go through it).
func TestMCPStdioSubcommand(t *testing.T) {
	u := startOpenAI(t)
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: mcpRules})
	cmd := exec.Command(binPath, "mcp", "--admin", "http://"+p.child.AdminAddr())
	cmd.Env = p.agentEnv(t, "CREDPROXY_ADMIN_TOKEN_FILE="+filepath.Join(p.dir, "admin-token"))
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "clients-test", Version: "1"}, nil).
		Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("credproxy mcp: %v\nstderr: %s", err, stderr.String())
	}
	if info := cs.InitializeResult().ServerInfo; info.Name != "credproxy" {
		t.Errorf("server info %+v, want credproxy", info)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if slices.Sort(names); strings.Join(names, ",") != "begin_task,end_task,explain,list_credentials,list_leases,list_tasks" {
		t.Errorf("tools %v", names)
	}
	callOK := func(name string, args any) map[string]any {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v\nstderr: %s", name, err, stderr.String())
		}
		all, _ := json.Marshal(res)
		noKey(t, "credproxy mcp "+name, string(all))
		if res.IsError {
			t.Fatalf("%s(%v): %s", name, args, all)
		}
		out, _ := res.StructuredContent.(map[string]any)
		return out
	}
	if c := fmt.Sprint(callOK("list_credentials", nil)); !strings.Contains(c, "name:openai") || !strings.Contains(c, "scope:task") {
		t.Errorf("list_credentials: %s", c)
	}
	client := proxiedClient(t, p)
	if code, body := chat(t, client, ""); code != http.StatusForbidden || !strings.Contains(body, "task-required") {
		t.Errorf("request outside a task: %d %s, want 403 task-required", code, body)
	}
	task := callOK("begin_task", map[string]any{"purpose": "stdio e2e", "ttl": "5m"})
	id, _ := task["id"].(string)
	if code, body := chat(t, client, id); code != http.StatusOK || !strings.Contains(body, "hello from the fake openai") {
		t.Errorf("request in the task: %d %s, want the upstream's answer", code, body)
	}
	callOK("end_task", map[string]any{"id": id})
	testutil.WaitFor(t, func() bool {
		return slices.ContainsFunc(p.audit(), func(ev map[string]any) bool { return ev["reason"] == "task_end" && ev["task"] == id })
	}, "the task's lease revoked with reason task_end")
	if code, body := chat(t, client, id); code != http.StatusForbidden || !strings.Contains(body, "task-not-open") {
		t.Errorf("request in the ended task: %d %s, want 403 task-not-open", code, body)
	}
	if ex := callOK("explain", map[string]any{"url": "https://api.openai.com/v1/chat/completions", "method": "POST"}); ex["credential"] != "openai" || ex["scope"] != "task" {
		t.Errorf("explain: %v", ex)
	}
	for _, tc := range []struct {
		name string
		args map[string]any
		want string
	}{
		{"begin_task", map[string]any{"purpose": "x", "ttl": "-1s"}, "positive"},
		{"begin_task", map[string]any{"purpose": "x", "credentials": []string{"nope"}}, `unknown credential`},
		{"end_task", map[string]any{"id": "tsk_0000000000000000"}, "unknown task"},
		{"explain", map[string]any{"url": "ftp://x/"}, "scheme"},
	} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tc.name, Arguments: tc.args})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if b, _ := json.Marshal(res.Content); !res.IsError || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s(%v): IsError %v %s, want a tool error with %q", tc.name, tc.args, res.IsError, b, tc.want)
		}
	}
	// A 2 MiB argument: the admin API refuses the call's body (over 1 MiB),
	// a tool error; the server goes on.
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "begin_task", Arguments: map[string]any{"purpose": strings.Repeat("x", 2<<20)}})
	if err != nil || !res.IsError || len(res.Content) != 1 || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "over 1048576 bytes") {
		t.Errorf("begin_task with a 2 MiB purpose: %v %+v, want a tool error naming the 1 MiB bound", err, res)
	}
	callOK("list_tasks", nil)
	// A frame over the stdio bound (16 MiB) cannot be resynchronised: the
	// server says why on stderr and exits 1.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "explain", Arguments: map[string]any{"url": strings.Repeat("x", 17<<20)}}); err == nil {
		t.Errorf("explain with a 17 MiB url: no error")
	}
	_ = cs.Close()
	testutil.WaitFor(t, func() bool { return cmd.ProcessState != nil }, "credproxy mcp to exit")
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), "maximum line length") {
		t.Errorf("credproxy mcp after a 17 MiB frame: exit %d, stderr %q; want 1 and the reason", code, stderr.String())
	}
	noKey(t, "credproxy mcp stderr", stderr.String())
}

// proxiedClient is a Go client using credproxy as its proxy, trusting its CA.
func proxiedClient(t *testing.T, p *proc) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(readFile(t, p.caFile)))
	pu, _ := url.Parse("http://" + p.proxyAddr)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// chat posts a chat completion through the proxy in task ("" for none).
func chat(t *testing.T, c *http.Client, task string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions", strings.NewReader(`{"model":"gpt-test","messages":[]}`))
	req.Header.Set("Content-Type", "application/json")
	if task != "" {
		req.Header.Set("X-Credproxy-Task", task)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The official MCP TypeScript SDK (@modelcontextprotocol/sdk) as an
// independent client of /mcp: tools listed, a task begun, a request in it
// through the proxy, the task ended, a request explained, hostile
// arguments answered with tool errors.
func TestMCPNodeSDK(t *testing.T) {
	if nodeInstallErr != nil {
		t.Fatalf("the Node preload is not installed: %v", nodeInstallErr)
	}
	dir := filepath.Join(repoRoot, "test", "clients", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
		t.Fatalf("test/clients/node has no @modelcontextprotocol/sdk (scripts/test.sh runs npm ci --prefix test/clients/node): %v", err)
	}
	u := startOpenAI(t)
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: mcpRules})
	cmd := exec.Command(tool(t, "node"), "--import", "./loopback-only.mjs", "mcp.mjs")
	cmd.Dir = dir
	cmd.Env = p.agentEnv(t, "CREDPROXY_MCP_URL=http://"+p.child.AdminAddr()+"/mcp", "CREDPROXY_ADMIN_TOKEN="+adminToken)
	out, err := (&client{name: "node mcp.mjs", cmd: cmd}).run(t)
	if err != nil {
		t.Fatalf("node mcp.mjs: %v\n%s", err, out)
	}
	for _, want := range []string{
		"tools: begin_task,end_task,explain,list_credentials,list_leases,list_tasks",
		`list_credentials: {"credentials":[{`, `"name":"openai"`,
		"in the task: hello from the fake openai",
		`end_task: {`, `"state":"ended"`,
		`explain: {"action":"inject"`,
		"begin_task error=true: ttl \"-1s\"",
		`begin_task error=true: invalid input: credential "no-such-credential"`,
		`end_task error=true: task "tsk_0000000000000000": unknown task`,
		"done",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("node mcp.mjs: expected %q in the output; got:\n%s", want, out)
		}
	}
	if !slices.ContainsFunc(p.audit(), func(ev map[string]any) bool { return ev["reason"] == "task_end" }) {
		t.Errorf("no task_end revocation in the audit: %v", p.audit())
	}
	checkOpenAIKey(t, u)
}
