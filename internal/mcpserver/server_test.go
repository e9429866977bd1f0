package mcpserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/internal/control/controltest"
	"github.com/credproxy/credproxy/internal/mcpserver"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/proxy"
	"github.com/credproxy/credproxy/rules"
)

var toolNames = []string{"begin_task", "end_task", "explain", "list_credentials", "list_leases", "list_tasks"}

// The tools over streamable HTTP at /mcp on the admin listener, with the
// SDK's own client: every tool has a description and typed schemas, and a
// task's whole life (begin with a credential, list, end) shows the
// credential leased and then revoked, and never its value.
func TestToolsOverStreamableHTTP(t *testing.T) {
	e := newEnv(t)
	cs := e.httpSession(t, testToken)
	if got := cs.InitializeResult().ServerInfo; got.Name != "credproxy" || got.Version != "test" {
		t.Errorf("server info %+v, want credproxy test", got)
	}
	wantTools(t, cs)
	taskLifecycle(t, e, cs)
}

// The same tools over the admin HTTP API (the backend of `credproxy mcp`),
// through an in-memory MCP transport.
func TestToolsOverAdminAPIClient(t *testing.T) {
	e := newEnv(t)
	cl, err := mcpserver.NewClient(e.admin, testToken)
	if err != nil {
		t.Fatal(err)
	}
	cs := inMemory(t, mcpserver.New(cl, mcpserver.Options{}))
	wantTools(t, cs)
	taskLifecycle(t, e, cs)
	hostileInput(t, e, cs)
}

func inMemory(t *testing.T, s *mcp.Server) *mcp.ClientSession {
	t.Helper()
	st, ct := mcp.NewInMemoryTransports()
	ss, err := s.Connect(context.Background(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ss.Close() })
	return connect(t, ct)
}

func wantTools(t *testing.T, cs *mcp.ClientSession) {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
		if len(tool.Description) < 80 || tool.InputSchema == nil || tool.OutputSchema == nil {
			t.Errorf("tool %s: description %q, input schema %v, output schema %v: want all three", tool.Name, tool.Description, tool.InputSchema, tool.OutputSchema)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, toolNames) {
		t.Errorf("tools %v, want %v", names, toolNames)
	}
	for _, tool := range res.Tools {
		if tool.Name == "begin_task" {
			for _, want := range []string{"end_task", "finally", "X-Credproxy-Task", "5m", "15m", "30m", "1h"} {
				if !strings.Contains(tool.Description, want) {
					t.Errorf("begin_task's description lacks %q", want)
				}
			}
		}
	}
}

func taskLifecycle(t *testing.T, e *env, cs *mcp.ClientSession) {
	t.Helper()
	var creds struct{ Credentials []control.CredentialInfo }
	res := ok(t, cs, "list_credentials", nil, &creds)
	if len(creds.Credentials) != 3 || creds.Credentials[1].Name != "db" || creds.Credentials[1].Scope != "task" ||
		fmt.Sprint(creds.Credentials[1].Hosts) != "[reports.example.test *.reports.example.test]" || creds.Credentials[2].Rules[0].Purpose != "chat" {
		t.Errorf("list_credentials = %+v, want api, db (task, reports.example.test and its subdomains), openai (purpose chat)", creds.Credentials)
	}
	noValue(t, "list_credentials", res)

	var ti lease.TaskInfo
	res = ok(t, cs, "begin_task", map[string]any{"purpose": "quarterly report", "ttl": "15m", "credentials": []string{"db"}}, &ti)
	if ti.ID == "" || ti.State != "open" || ti.TTL != "15m0s" || len(ti.Leases) != 1 || e.Srcs["db"].Acquires() != 1 {
		t.Fatalf("begin_task = %+v (db acquired %d times), want an open 15m task holding one db lease", ti, e.Srcs["db"].Acquires())
	}
	if txt := text(res); !strings.Contains(txt, proxy.TaskHeader+": "+ti.ID) || !strings.Contains(txt, "end_task") {
		t.Errorf("begin_task text %q: want the header to send and a reminder to end the task", txt)
	}
	noValue(t, "begin_task", res)

	var leases struct{ Leases []lease.Info }
	res = ok(t, cs, "list_leases", nil, &leases)
	if len(leases.Leases) != 1 || leases.Leases[0].Task != ti.ID || leases.Leases[0].Credential != "db" {
		t.Errorf("list_leases = %+v, want the task's db lease", leases.Leases)
	}
	noValue(t, "list_leases", res)

	var ended lease.TaskInfo
	ok(t, cs, "end_task", map[string]any{"id": ti.ID}, &ended)
	if ended.ID != ti.ID || ended.State != "ended" {
		t.Errorf("end_task = %+v, want %s ended", ended, ti.ID)
	}
	if n := len(e.M.List()); n != 0 {
		t.Errorf("%d leases held after end_task, want 0", n)
	}
	if !strings.Contains(e.Audit.String(), `"reason":"task_end"`) {
		t.Errorf("audit lacks a task_end revocation:\n%s", e.Audit.String())
	}
	var tasks struct{ Tasks []lease.TaskInfo }
	ok(t, cs, "list_tasks", nil, &tasks)
	if i := slices.IndexFunc(tasks.Tasks, func(x lease.TaskInfo) bool { return x.ID == ti.ID }); i < 0 || tasks.Tasks[i].State != "ended" {
		t.Errorf("list_tasks = %+v, want %s ended", tasks.Tasks, ti.ID)
	}

	var ex proxy.Explanation
	ok(t, cs, "explain", map[string]any{"url": "https://api.openai.com/v1/chat/completions", "method": "POST"}, &ex)
	if ex.Action != "inject" || ex.Rule != "openai" || ex.Credential != "openai" || ex.Inject != "header Authorization" {
		t.Errorf("explain = %+v, want inject rule openai, header Authorization", ex)
	}
	ok(t, cs, "explain", map[string]any{"url": "http://api.example.test/x"}, &ex)
	if ex.Action != "refuse" || ex.Problem != "cleartext-refused" || ex.Status != http.StatusForbidden {
		t.Errorf("explain http:// = %+v, want refuse cleartext-refused 403", ex)
	}
}

// noValue fails if res holds anything a test source ever handed out.
func noValue(t *testing.T, what string, res *mcp.CallToolResult) {
	t.Helper()
	b, _ := json.Marshal(res)
	if strings.Contains(string(b), "sk-test") || strings.Contains(string(b), "CREDPROXY_TEST_") {
		t.Errorf("%s shows a value or where one is read from: %s", what, b)
	}
}

// Hostile arguments over streamable HTTP: each is a clear tool error (or,
// for a body over the bound, a refused request), and the server goes on.
func TestHostileToolInputOverStreamableHTTP(t *testing.T) {
	e := newEnv(t)
	cs := e.httpSession(t, testToken)
	hostileInput(t, e, cs)

	huge := strings.Repeat("x", 2*mcpserver.MaxRequestBytes)
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "begin_task", Arguments: map[string]any{"purpose": huge}})
	if err == nil || strings.Contains(err.Error(), huge[:1000]) {
		t.Errorf("begin_task with a 2 MiB purpose: %.200v, want the request refused", err)
	}
	t.Logf("2 MiB purpose: %.300v", err)
	ok(t, e.httpSession(t, testToken), "list_tasks", nil, nil) // still serving
	for _, ti := range e.M.Tasks() {
		if ti.State == "open" {
			t.Errorf("task %+v open after hostile input", ti)
		}
	}
}

func hostileInput(t *testing.T, e *env, cs *mcp.ClientSession) {
	t.Helper()
	for _, ttl := range []string{"-1s", "0s", "soon", "100000000000h"} {
		toolErr(t, cs, "begin_task", map[string]any{"purpose": "x", "ttl": ttl}, "ttl")
	}
	var ti lease.TaskInfo
	ok(t, cs, "begin_task", map[string]any{"purpose": "long", "ttl": "1000000h"}, &ti)
	if ti.TTL != "2h0m0s" {
		t.Errorf("begin_task ttl 1000000h: effective ttl %s, want capped at leases.maxTTL 2h0m0s", ti.TTL)
	}
	ok(t, cs, "end_task", map[string]any{"id": ti.ID}, nil)
	ok(t, cs, "end_task", map[string]any{"id": ti.ID}, nil) // ending twice is harmless

	toolErr(t, cs, "begin_task", map[string]any{"purpose": "x", "credentials": []string{"nope"}}, `"nope"`)
	toolErr(t, cs, "begin_task", map[string]any{"purpose": "x", "credentials": []string{"openai"}}, "scope: task")
	toolErr(t, cs, "begin_task", map[string]any{"purpose": "x", "credentials": []string{"db", "db"}}, "named twice")
	toolErr(t, cs, "begin_task", map[string]any{"purpose": strings.Repeat("p", 300)}, "256 bytes")
	toolErr(t, cs, "begin_task", map[string]any{"purpose": "a\nb"}, "printable")
	toolErr(t, cs, "begin_task", map[string]any{"purpose": 42}, "purpose")
	toolErr(t, cs, "end_task", map[string]any{"id": "tsk_0000000000000000"}, "unknown task")
	if got := toolErr(t, cs, "end_task", map[string]any{"id": strings.Repeat("i", 100_000)}, "not a task id"); len(got) > 500 {
		t.Errorf("end_task with a 100 kB id: error of %d bytes, want it short", len(got))
	}
	toolErr(t, cs, "end_task", map[string]any{}, "id")
	toolErr(t, cs, "explain", map[string]any{"url": "ftp://x/"}, "scheme")
	toolErr(t, cs, "explain", map[string]any{}, "url")
	if got := toolErr(t, cs, "explain", map[string]any{"url": "https://a.test/" + strings.Repeat("a", 100_000)}, "longer than 8192 bytes"); len(got) > 500 {
		t.Errorf("explain with a 100 kB url: error of %d bytes, want it short", len(got))
	}
	if got := toolErr(t, cs, "begin_task", map[string]any{"purpose": "x", "credentials": []string{strings.Repeat("c", 100_000)}}, "not a credential name"); len(got) > 500 {
		t.Errorf("begin_task with a 100 kB credential name: error of %d bytes, want it short", len(got))
	}
	toolErr(t, cs, "begin_task", map[string]any{"purpose": "x", "credentials": make([]string, 65)}, "at most 64")
	toolErr(t, cs, "begin_task", map[string]any{"purpose": "x", "ttl": "5m", "extra": true}, "extra")
	toolErr(t, cs, "explain", map[string]any{"url": "https://api.openai.com/", "method": "GET /"}, "not an HTTP method")
	if n := len(e.M.List()); n != 0 {
		t.Errorf("%d leases held after hostile input, want 0", n)
	}
}

// The admin API client's failures are tool errors that say what is wrong:
// a wrong token, a credproxy that is not running.
func TestAdminAPIClientFailures(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ base, token, want string }{
		{e.admin, "wrong-token", "refused the token (401)"},
		{"http://127.0.0.1:1", testToken, "unreachable"},
	} {
		cl, err := mcpserver.NewClient(tc.base, tc.token)
		if err != nil {
			t.Fatal(err)
		}
		cs := inMemory(t, mcpserver.New(cl, mcpserver.Options{}))
		for _, tool := range []string{"list_credentials", "list_tasks", "list_leases"} {
			toolErr(t, cs, tool, nil, tc.want)
		}
		toolErr(t, cs, "begin_task", map[string]any{"purpose": "x"}, tc.want)
	}
	for _, bad := range [][2]string{{"127.0.0.1:9464", testToken}, {"http://u:p@127.0.0.1:9464", testToken}, {"http://127.0.0.1:9464/x", testToken}, {e.admin, ""}} {
		if _, err := mcpserver.NewClient(bad[0], bad[1]); err == nil {
			t.Errorf("NewClient(%q, %q) = nil error", bad[0], bad[1])
		}
	}
}

// With clients: configured, explain needs the caller's identity (the
// control API's rule), and the tool says so.
func TestExplainNeedsIdentityWithClients(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_RESEARCHER_TOKEN", "researcher-token-0123456789")
	cfg, err := rules.Parse("rules.yaml", []byte(controltest.Config+`
clients:
  - {name: researcher, tokenEnv: CREDPROXY_TEST_RESEARCHER_TOKEN}
`))
	if err != nil {
		t.Fatal(err)
	}
	m := lease.NewManager(nil, lease.Options{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	ctl := control.New(control.Options{Leases: m, Config: func() *rules.Config { return cfg }})
	cs := inMemory(t, mcpserver.New(mcpserver.Local(ctl), mcpserver.Options{}))
	toolErr(t, cs, "explain", map[string]any{"url": "https://api.openai.com/v1/models"}, "identity: required when clients: is set")
	var ex proxy.Explanation
	ok(t, cs, "explain", map[string]any{"url": "https://api.openai.com/v1/models", "identity": "researcher"}, &ex)
	if ex.Action != "inject" || ex.Rule != "openai" {
		t.Errorf("explain as researcher = %+v, want inject rule openai", ex)
	}
}

// A store that refuses to revoke: end_task still ends the task, and its
// tool error says both things.
func TestEndTaskWhenTheStoreRefusesToRevoke(t *testing.T) {
	e := newEnv(t)
	cs := inMemory(t, mcpserver.New(mcpserver.Local(e.Ctl), mcpserver.Options{}))
	var ti lease.TaskInfo
	ok(t, cs, "begin_task", map[string]any{"purpose": "x", "credentials": []string{"db"}}, &ti)
	e.Srcs["db"].FailRevoke(errors.New("store down"))
	toolErr(t, cs, "end_task", map[string]any{"id": ti.ID}, "task "+ti.ID+" ended, but the secret store failed to revoke")
	if n := len(e.M.List()); n != 0 {
		t.Errorf("%d leases held after end_task, want 0", n)
	}
}
