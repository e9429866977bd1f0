package admin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/internal/mcpserver"
	"github.com/credproxy/credproxy/metrics"
)

const mcpInitialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// mcpPost sends body to /mcp as an MCP client would, with the
// Authorization header auth ("" for none), host as the Host header ("" for
// the URL's) and Content-Type ctype.
func mcpPost(t *testing.T, base, auth, host, ctype, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header, readAll(t, resp)
}

// /mcp is behind the same token as the control routes, for every method;
// without a token configured it is refused like them.
func TestMCPNeedsTheToken(t *testing.T) {
	e := newControlEnv(t, nil)
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + testToken + "x", "Basic " + testToken, testToken} {
		for _, method := range []string{"POST", "GET", "DELETE"} {
			status, hdr, body := do(t, method, e.url+"/mcp", auth, "")
			wantProblem(t, method+" /mcp with "+auth, status, hdr, body, http.StatusUnauthorized, "admin-unauthorized")
		}
		status, hdr, body := mcpPost(t, e.url, auth, "", "application/json", mcpInitialize)
		wantProblem(t, "initialize with "+auth, status, hdr, body, http.StatusUnauthorized, "admin-unauthorized")
	}
	status, hdr, body := mcpPost(t, e.url, "Bearer "+testToken, "", "application/json", mcpInitialize)
	if status != http.StatusOK || !strings.Contains(body, `"name":"credproxy"`) {
		t.Errorf("initialize with the token: %d %v %s, want 200 and the server's info", status, hdr, body)
	}

	off := serveAdmin(t, Options{Metrics: metrics.New(), Control: control.New(control.Options{Leases: e.M})}).URL
	status, hdr, body = mcpPost(t, off, "Bearer "+testToken, "", "application/json", mcpInitialize)
	wantProblem(t, "initialize with no token configured", status, hdr, body, http.StatusForbidden, "admin-disabled")
}

// The SDK's own refusals come back as problems: a Host header that is not
// loopback on the loopback listener (DNS rebinding), a body over the
// bound, a body that is not JSON.
func TestMCPRefusalsAreProblems(t *testing.T) {
	e := newControlEnv(t, nil)
	auth := "Bearer " + testToken
	for _, host := range []string{"evil.example", "evil.example:80", "127.0.0.1.nip.io", "credproxy.internal:9464"} {
		status, hdr, body := mcpPost(t, e.url, auth, host, "application/json", mcpInitialize)
		p := wantProblem(t, "Host "+host, status, hdr, body, http.StatusForbidden, "admin-host-refused")
		if p != nil && !strings.Contains(p["detail"].(string), "Host") {
			t.Errorf("Host %s: detail %q, want it to name the Host header", host, p["detail"])
		}
	}
	port := e.url[strings.LastIndex(e.url, ":")+1:]
	for _, host := range []string{"localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port} {
		if status, _, body := mcpPost(t, e.url, auth, host, "application/json", mcpInitialize); status != http.StatusOK {
			t.Errorf("Host %s: %d %s, want 200", host, status, body)
		}
	}
	huge := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"begin_task","arguments":{"purpose":"` +
		strings.Repeat("x", mcpserver.MaxRequestBytes) + `"}}}`
	status, hdr, body := mcpPost(t, e.url, auth, "", "application/json", huge)
	wantProblem(t, "a body over 1 MiB", status, hdr, body, http.StatusRequestEntityTooLarge, "admin-body-too-large")
	status, hdr, body = mcpPost(t, e.url, auth, "", "text/plain", mcpInitialize)
	wantProblem(t, "Content-Type text/plain", status, hdr, body, http.StatusUnsupportedMediaType, "admin-unsupported-media-type")
	status, hdr, body = mcpPost(t, e.url, auth, "", "application/json", `{"jsonrpc":`)
	wantProblem(t, "a truncated body", status, hdr, body, http.StatusBadRequest, "admin-bad-request")
	for _, method := range []string{"GET", "DELETE", "PUT"} {
		status, hdr, body = do(t, method, e.url+"/mcp", auth, "")
		wantProblem(t, method+" /mcp", status, hdr, body, http.StatusMethodNotAllowed, "admin-method-not-allowed")
		if hdr.Get("Allow") != "POST" {
			t.Errorf("%s /mcp: Allow %q, want POST", method, hdr.Get("Allow"))
		}
	}
}
