// Package mcpserver is credproxy's control API as an MCP server: tools to
// list credentials, begin and end tasks, list tasks and leases and explain a
// rule, for an agent (an LLM) to call. One tool set runs over two backends:
// the control API in process (served at /mcp on the admin listener) and a
// running credproxy's admin HTTP API (the `credproxy mcp` stdio server). It
// never returns a credential value: the control API has none to give.
package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/proxy"
)

// Backend is what the tools call. Local wraps the in-process control API;
// Client calls a running credproxy's admin HTTP API. Every method may fail
// (the HTTP one can), and its error text names things, never a value.
type Backend interface {
	ListCredentials(ctx context.Context) ([]control.CredentialInfo, error)
	BeginTask(ctx context.Context, r control.TaskRequest) (lease.TaskInfo, error)
	EndTask(ctx context.Context, id string) (lease.TaskInfo, error)
	ListTasks(ctx context.Context) ([]lease.TaskInfo, error)
	ListLeases(ctx context.Context) ([]lease.Info, error)
	Explain(ctx context.Context, method, rawURL, identity string) (proxy.Explanation, error)
}

// Local is the in-process backend: the control API itself. Its list
// methods cannot fail.
func Local(c *control.Control) Backend { return local{c} }

type local struct{ c *control.Control }

func (l local) ListCredentials(context.Context) ([]control.CredentialInfo, error) {
	return l.c.ListCredentials(), nil
}
func (l local) BeginTask(ctx context.Context, r control.TaskRequest) (lease.TaskInfo, error) {
	return l.c.BeginTask(ctx, r)
}
func (l local) EndTask(ctx context.Context, id string) (lease.TaskInfo, error) {
	return l.c.EndTask(ctx, id)
}
func (l local) ListTasks(context.Context) ([]lease.TaskInfo, error) { return l.c.ListTasks(), nil }
func (l local) ListLeases(context.Context) ([]lease.Info, error)    { return l.c.ListLeases(), nil }
func (l local) Explain(_ context.Context, m, u, id string) (proxy.Explanation, error) {
	return l.c.Explain(m, u, id)
}

// Options configures New.
type Options struct {
	Version string // credproxy's version, reported to clients; "" is "dev"
}

// instructions tell the model how the tools fit together.
const instructions = `credproxy holds credentials so you never do: send HTTP(S) requests through the proxy (HTTPS_PROXY is set for you) and credproxy adds the right credential for the destination. You never see a secret value and must never ask for one.
Use list_credentials to see which credentials exist and which hosts they go to. A credential with scope "task" is only given inside a task: call begin_task right before the unit of work that needs it, send the header "X-Credproxy-Task: <task id>" on that work's requests, and ALWAYS call end_task with the id when the work ends, whether it succeeded or failed (like a finally block), so the credentials are revoked at once. Use explain to check what credproxy would do with a request before sending it.`

// New returns the MCP server whose tools call b.
func New(b Backend, o Options) *mcp.Server {
	if o.Version == "" {
		o.Version = "dev"
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "credproxy", Title: "credproxy control API", Version: o.Version},
		&mcp.ServerOptions{Instructions: instructions})
	t := tools{b}
	mcp.AddTool(s, &mcp.Tool{Name: "list_credentials", Title: "List credentials", Description: descListCredentials,
		Annotations: readOnly()}, t.listCredentials)
	mcp.AddTool(s, &mcp.Tool{Name: "begin_task", Title: "Begin a task", Description: descBeginTask,
		Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)}}, t.beginTask)
	mcp.AddTool(s, &mcp.Tool{Name: "end_task", Title: "End a task", Description: descEndTask,
		Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)}}, t.endTask)
	mcp.AddTool(s, &mcp.Tool{Name: "list_tasks", Title: "List tasks", Description: descListTasks,
		Annotations: readOnly()}, t.listTasks)
	mcp.AddTool(s, &mcp.Tool{Name: "list_leases", Title: "List leases", Description: descListLeases,
		Annotations: readOnly()}, t.listLeases)
	mcp.AddTool(s, &mcp.Tool{Name: "explain", Title: "Explain a request", Description: descExplain,
		Annotations: readOnly()}, t.explain)
	return s
}

func ptr[T any](v T) *T { return &v }

func readOnly() *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)}
}

const (
	descListCredentials = `List the credentials credproxy can add to your requests, by name: for each, its scope ("shared", "identity", or "task"), its TTLs, the hosts it is sent to and the rules that send it (hosts, paths, methods, purpose). It never returns a secret value. Call it to learn which credential a host needs and whether you must begin a task first (scope "task").`

	descBeginTask = `Begin a task: a unit of work that holds short-lived credentials only while it runs. Call it right before work whose requests need a credential with scope "task" (see list_credentials). Send the header "X-Credproxy-Task: <id>" (the returned id) on every request of that work through the proxy. ALWAYS call end_task with the id when the work ends, whether it succeeded or failed (as in a finally block): that revokes the credentials at once instead of at the TTL.
ttl is a Go duration: the longest the work may take, kept as short as you can: a single API call "5m", a database query "15m"; a migration or a batch job as long as it may run (say "2h"), its credentials' 30m or 1h leases being renewed while the work uses them. Do not end a task in the middle of its work: that revokes its credentials. The config caps the ttl (the answer shows the effective one); the task ends by itself then. Default 15m.
credentials lists task-scoped credentials to acquire now (all or none), so a failure shows here and not halfway through the work; others are acquired at the task's first request that needs them.`

	descEndTask = `End a task begun with begin_task: its credentials are revoked now and its id stops working. Call it when the task's work ends, succeeded or failed, always (as in a finally block). Ending a task that has already ended or expired is harmless.`

	descListTasks = `List the open tasks, and those that ended in the last hour, with their purpose, credentials, effective ttl, expiry and state (open, ended, expired). Use it to find a task id you lost, or to check that your tasks are ended.`

	descListLeases = `List the credential leases credproxy holds now: lease id, credential, the task it belongs to, issue and expiry times, renewals and state. Never a value.`

	descExplain = `Explain what credproxy would do with a request before you send it: which rule matches and what it would add, by name (credential, the header or query parameter it goes into, its scope), or why it would refuse (the problem type and status you would get), or that it would tunnel or pass the request untouched. Give the absolute URL and the method (default GET).`
)

type tools struct{ b Backend }

// Inputs and outputs: the SDK derives each tool's JSON schemas from them.
type (
	noInput struct{}

	beginTaskInput struct {
		Purpose     string   `json:"purpose" jsonschema:"why the task needs credentials, one line of at most 256 bytes; it goes into every audit record of the task"`
		TTL         string   `json:"ttl,omitempty" jsonschema:"how long the task may last, a Go duration such as 5m, 15m, 30m or 1h; default 15m"`
		Credentials []string `json:"credentials,omitempty" jsonschema:"names of task-scoped credentials (from list_credentials) to acquire now"`
		Identity    string   `json:"identity,omitempty" jsonschema:"restricts the task to this caller identity (a clients: name); omit to let any caller use it"`
	}

	endTaskInput struct {
		ID string `json:"id" jsonschema:"the task id begin_task returned"`
	}

	explainInput struct {
		URL      string `json:"url" jsonschema:"the absolute http:// or https:// URL the request would go to"`
		Method   string `json:"method,omitempty" jsonschema:"the HTTP method; default GET"`
		Identity string `json:"identity,omitempty" jsonschema:"the caller identity to explain for; required only when the config has clients:"`
	}

	credentialsOutput struct {
		Credentials []control.CredentialInfo `json:"credentials"`
	}
	tasksOutput struct {
		Tasks []lease.TaskInfo `json:"tasks"`
	}
	leasesOutput struct {
		Leases []lease.Info `json:"leases"`
	}
)

// Bounds on arguments that an error would echo: a caller's huge string
// must not come back whole (the body bound, 1 MiB, holds the rest).
const (
	maxIDBytes          = 64 // a task id (ids are short)
	maxURLBytes         = 8 << 10
	maxCredentials      = 64
	maxCredentialLength = 128
)

func (t tools) listCredentials(ctx context.Context, _ *mcp.CallToolRequest, _ noInput) (*mcp.CallToolResult, credentialsOutput, error) {
	cs, err := t.b.ListCredentials(ctx)
	if err != nil {
		return nil, credentialsOutput{}, toolError(err)
	}
	return nil, credentialsOutput{Credentials: nonNil(cs)}, nil
}

func (t tools) beginTask(ctx context.Context, _ *mcp.CallToolRequest, in beginTaskInput) (*mcp.CallToolResult, lease.TaskInfo, error) {
	if len(in.Credentials) > maxCredentials {
		return nil, lease.TaskInfo{}, fmt.Errorf("credentials: %d named, at most %d", len(in.Credentials), maxCredentials)
	}
	for _, name := range in.Credentials {
		if len(name) > maxCredentialLength {
			return nil, lease.TaskInfo{}, fmt.Errorf("credentials: %q is not a credential name (list_credentials shows them)", clip(name))
		}
	}
	r := control.TaskRequest{Purpose: in.Purpose, Identity: in.Identity, Credentials: in.Credentials}
	if in.TTL != "" {
		d, err := time.ParseDuration(in.TTL)
		if err != nil || d <= 0 {
			return nil, lease.TaskInfo{}, fmt.Errorf("ttl %q: want a positive Go duration such as \"15m\" or \"1h\"", clip(in.TTL))
		}
		r.TTL = d
	}
	ti, err := t.b.BeginTask(ctx, r)
	if err != nil {
		return nil, lease.TaskInfo{}, toolError(err)
	}
	hint := fmt.Sprintf("Task %s is open until %s (ttl %s). Send the header %q on its requests through the proxy, and call end_task with id %q when the work ends, even if it fails.",
		ti.ID, ti.Expires.Format(time.RFC3339), ti.TTL, proxy.TaskHeader+": "+ti.ID, ti.ID)
	return withText(ti, hint), ti, nil
}

func (t tools) endTask(ctx context.Context, _ *mcp.CallToolRequest, in endTaskInput) (*mcp.CallToolResult, lease.TaskInfo, error) {
	if in.ID == "" || len(in.ID) > maxIDBytes || strings.ContainsFunc(in.ID, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return nil, lease.TaskInfo{}, fmt.Errorf("id %q: not a task id (list_tasks shows them)", clip(in.ID))
	}
	ti, err := t.b.EndTask(ctx, in.ID)
	if err != nil && ti.State != "" && ti.State != lease.TaskOpen {
		// Ended, and its leases dropped, but the store refused a revocation.
		return nil, lease.TaskInfo{}, fmt.Errorf("task %s ended, but the secret store failed to revoke a credential (it lapses at its TTL): %w", ti.ID, err)
	}
	if err != nil {
		return nil, lease.TaskInfo{}, toolError(err)
	}
	return nil, ti, nil
}

func (t tools) listTasks(ctx context.Context, _ *mcp.CallToolRequest, _ noInput) (*mcp.CallToolResult, tasksOutput, error) {
	ts, err := t.b.ListTasks(ctx)
	if err != nil {
		return nil, tasksOutput{}, toolError(err)
	}
	return nil, tasksOutput{Tasks: nonNil(ts)}, nil
}

func (t tools) listLeases(ctx context.Context, _ *mcp.CallToolRequest, _ noInput) (*mcp.CallToolResult, leasesOutput, error) {
	ls, err := t.b.ListLeases(ctx)
	if err != nil {
		return nil, leasesOutput{}, toolError(err)
	}
	return nil, leasesOutput{Leases: nonNil(ls)}, nil
}

func (t tools) explain(ctx context.Context, _ *mcp.CallToolRequest, in explainInput) (*mcp.CallToolResult, proxy.Explanation, error) {
	if len(in.URL) > maxURLBytes {
		return nil, proxy.Explanation{}, fmt.Errorf("url %q: longer than %d bytes", clip(in.URL), maxURLBytes)
	}
	e, err := t.b.Explain(ctx, in.Method, in.URL, in.Identity)
	if err != nil {
		return nil, proxy.Explanation{}, toolError(err)
	}
	return nil, e, nil
}

// toolError is the tool result's error text: what went wrong and what to
// do. The control API's errors name ids and credentials, never a value.
func toolError(err error) error {
	switch {
	case errors.Is(err, control.ErrInvalid):
		return err
	case errors.Is(err, lease.ErrUnknownTask):
		return fmt.Errorf("%w (list_tasks shows the tasks)", err)
	case errors.Is(err, lease.ErrClosed):
		return fmt.Errorf("credproxy is shutting down: %w", err)
	case errors.Is(err, errUnreachable):
		return err
	}
	return fmt.Errorf("secret store failed: %w", err)
}

// withText is the result of a tool whose structured output is v, with a
// hint after its JSON text (the SDK would otherwise give the JSON alone).
func withText(v any, hint string) *mcp.CallToolResult {
	b, _ := json.Marshal(v)
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}, &mcp.TextContent{Text: hint}}}
}

// nonNil makes an empty list encode as [] (the output schema wants an array).
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// clip shortens an argument echoed in an error: a caller's huge string
// must not come back whole.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}
