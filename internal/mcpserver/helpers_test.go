package mcpserver_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/credproxy/credproxy/internal/admin"
	"github.com/credproxy/credproxy/internal/control/controltest"
	"github.com/credproxy/credproxy/metrics"
)

const testToken = "admin-token-0123456789abcdef"

// env is the control API (controltest: a real lease manager over test
// sources, on a fake clock) and, served on a 127.0.0.1 listener, the admin
// server that mounts it at /mcp.
type env struct {
	*controltest.Env
	admin string // http://127.0.0.1:port
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{Env: controltest.New(t, nil)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(admin.New(admin.Options{Metrics: metrics.New(), Token: testToken, Control: e.Ctl, Version: "test"}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	e.admin = srv.URL
	return e
}

// bearer adds the admin token to every request.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// connect opens an MCP client session over t, closed when the test ends.
func connect(t *testing.T, tr mcp.Transport) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "credproxy-test", Version: "1"}, nil)
	cs, err := c.Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// httpSession is an MCP client of the admin listener's /mcp with token.
func (e *env) httpSession(t *testing.T, token string) *mcp.ClientSession {
	t.Helper()
	return connect(t, &mcp.StreamableClientTransport{Endpoint: e.admin + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}}, MaxRetries: -1})
}

// call calls tool with args and returns its result; a protocol error fails
// the test (a tool error is a result with IsError).
func call(t *testing.T, cs *mcp.ClientSession, tool string, args any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s(%v): %v", tool, args, err)
	}
	return res
}

// ok calls tool, wants a result that is not an error, and decodes its
// structured content into out (nil to skip).
func ok(t *testing.T, cs *mcp.ClientSession, tool string, args, out any) *mcp.CallToolResult {
	t.Helper()
	res := call(t, cs, tool, args)
	if res.IsError {
		t.Fatalf("%s(%v): tool error %s", tool, args, text(res))
	}
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: structured content %s: %v", tool, b, err)
		}
	}
	return res
}

// toolErr calls tool and wants a tool error whose text contains want.
func toolErr(t *testing.T, cs *mcp.ClientSession, tool string, args any, want string) string {
	t.Helper()
	res := call(t, cs, tool, args)
	got := text(res)
	if !res.IsError || !strings.Contains(got, want) {
		t.Errorf("%s(%.200v): IsError %v %q, want a tool error containing %q", tool, args, res.IsError, got, want)
	}
	return got
}

// text joins a result's text contents.
func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}
