package proxy_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
)

const (
	tokenA = "agent-a-token-0123456789abcdef"
	tokenB = "agent-b-token-fedcba9876543210"
)

// authConfig has two clients; rule for-a is only agent-a's, for-b only
// agent-b's, and echo.example.test gives each caller a lease of its own.
const authConfig = `
listen: 127.0.0.1:0
admin: 127.0.0.1:0
ca: {cert: "{{DIR}}/ca.pem", key: "{{DIR}}/ca-key.pem"}
upstream: {caFiles: ["{{UPSTREAM_CA}}"]}
clients:
  - {name: agent-a, tokenEnv: CREDPROXY_TEST_TOKEN_A}
  - {name: agent-b, tokenEnv: CREDPROXY_TEST_TOKEN_B}
credentials:
  api: {source: env, env: CREDPROXY_TEST_API_KEY}
  per: {source: env, env: CREDPROXY_TEST_API_KEY, scope: identity}
rules:
  - name: for-a
    hosts: [api.example.test]
    paths: [/a/]
    identities: [agent-a]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: for-b
    hosts: [api.example.test]
    paths: [/b/]
    identities: [agent-b]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: per-agent
    hosts: [echo.example.test]
    credential: per
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: plain
    hosts: [localhost]
    allowPlaintext: true
    identities: [agent-a]
    credential: api
    inject: {header: X-Api-Key, value: "{{ .Value }}"}
`

func newAuthEnv(t *testing.T) (*env, *upstream, *upstream) {
	t.Helper()
	t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
	t.Setenv("CREDPROXY_TEST_TOKEN_A", tokenA)
	t.Setenv("CREDPROXY_TEST_TOKEN_B", tokenB)
	p := newPKI(t, t.TempDir())
	up := startUpstream(t, p, true, okHandler)
	plain := startUpstream(t, p, false, okHandler)
	e := startProxy(t, p, authConfig, map[string]string{
		"api.example.test:443":   addrOf(up.Server),
		"echo.example.test:443":  addrOf(up.Server),
		"other.example.test:443": addrOf(up.Server),
		"localhost:80":           addrOf(plain.Server),
	})
	return e, up, plain
}

// agent is a Go client whose proxy URL carries NAME:TOKEN, as
// HTTPS_PROXY=http://NAME:TOKEN@host:port would.
func (e *env) agent(name, token string) *http.Client {
	u := *e.url
	u.User = url.UserPassword(name, token)
	return &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(&u),
		TLSClientConfig: &tls.Config{RootCAs: e.ca},
	}, Timeout: 30 * time.Second}
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// sendRaw writes one request line with an optional Proxy-Authorization and
// reads the answer.
func sendRaw(t *testing.T, e *env, method, target, auth string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", e.url.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	host := strings.TrimPrefix(target, "http://")
	host, _, _ = strings.Cut(host, "/")
	msg := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, host)
	if auth != "" {
		msg += "Proxy-Authorization: " + auth + "\r\n"
	}
	_, _ = io.WriteString(c, msg+"\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestProxyAuthRequired(t *testing.T) {
	e, up, plain := newAuthEnv(t)
	auths := map[string]string{
		"none":                 "",
		"wrong password":       basic("agent-a", tokenB),
		"unknown user":         basic("agent-c", tokenA),
		"token one byte short": basic("agent-a", tokenA[:len(tokenA)-1]),
		"token one byte long":  basic("agent-a", tokenA+"x"),
		"no password":          basic("agent-a", ""),
		"bearer scheme":        "Bearer " + tokenA,
		"bad base64":           "Basic !!!",
	}
	targets := []struct{ method, target string }{
		{"CONNECT", "api.example.test:443"},   // intercepted
		{"CONNECT", "other.example.test:443"}, // would be tunnelled
		{"GET", "http://localhost/x"},         // plain, absolute-form
	}
	for name, auth := range auths {
		for _, tg := range targets {
			resp := sendRaw(t, e, tg.method, tg.target, auth)
			if resp.StatusCode != http.StatusProxyAuthRequired {
				t.Errorf("%s %s, %s: status %d, want 407", tg.method, tg.target, name, resp.StatusCode)
				continue
			}
			if h := resp.Header.Get("Proxy-Authenticate"); h != `Basic realm="credproxy"` {
				t.Errorf("%s %s, %s: Proxy-Authenticate = %q, want Basic realm", tg.method, tg.target, name, h)
			}
			if msg, _ := refusedAs(t, resp, "proxy-auth-required"); !strings.Contains(msg, "proxy authentication") {
				t.Errorf("%s %s, %s: error %q, want it to say proxy authentication", tg.method, tg.target, name, msg)
			}
		}
	}
	if n := len(up.seen()) + len(plain.seen()); n != 0 {
		t.Errorf("upstreams saw %d requests from unauthenticated callers, want 0", n)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.dialled) != 0 {
		t.Errorf("proxy dialled %v for unauthenticated callers, want nothing", e.dialled)
	}
}

// get does one request and returns its status and body.
func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Authorization", "Bearer placeholder")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRuleForAnotherIdentityIsRefused(t *testing.T) {
	e, up, plain := newAuthEnv(t)
	a, b := e.agent("agent-a", tokenA), e.agent("agent-b", tokenB)
	if code, body := get(t, a, "https://api.example.test/a/x"); code != 200 || body != "ok" {
		t.Fatalf("agent-a on its rule: %d %q, want 200 ok", code, body)
	}
	for _, tc := range []struct {
		c             *http.Client
		url, rule, id string
	}{
		{a, "https://api.example.test/b/x", "for-b", "agent-a"},
		{b, "https://api.example.test/a/x", "for-a", "agent-b"},
		{b, "http://localhost/x", "plain", "agent-b"},
	} {
		code, body := get(t, tc.c, tc.url)
		want := fmt.Sprintf(`rule %q is not for identity %q`, tc.rule, tc.id)
		if msg, rule := jsonError(t, strings.NewReader(body)); code != 403 || rule != tc.rule || msg != want {
			t.Errorf("%s as %s: %d %q (rule %q), want 403 %q", tc.url, tc.id, code, msg, rule, want)
		}
	}
	if code, body := get(t, a, "http://localhost/x"); code != 200 || body != "ok" {
		t.Fatalf("agent-a on its plain rule: %d %q, want 200 ok", code, body)
	}
	seen := append(up.seen(), plain.seen()...)
	if len(seen) != 2 {
		t.Fatalf("upstreams saw %d requests, want 2 (only the allowed ones)", len(seen))
	}
	for _, r := range seen {
		if v := r.Header.Get("Proxy-Authorization"); v != "" {
			t.Errorf("Proxy-Authorization reached the upstream: %q", v)
		}
		if !strings.HasPrefix(r.URL.Path, "/a/") && r.URL.Path != "/x" {
			t.Errorf("upstream saw %s, which was refused", r.URL.Path)
		}
	}
}

func TestEachAgentGetsItsOwnIdentityLease(t *testing.T) {
	e, _, _ := newAuthEnv(t)
	for range 2 {
		for _, c := range []*http.Client{e.agent("agent-a", tokenA), e.agent("agent-b", tokenB)} {
			if code, _ := get(t, c, "https://echo.example.test/"); code != 200 {
				t.Fatalf("status %d, want 200", code)
			}
		}
	}
	audit := e.audit.String()
	if got := testutil.AuditEvents(audit); got != "lease.created,lease.created" {
		t.Fatalf("audit events %s, want two lease.created (one per agent)", got)
	}
	var created []string
	for _, line := range strings.Split(strings.TrimSpace(audit), "\n") {
		var ev struct{ Event, Identity string }
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		created = append(created, ev.Event+" "+ev.Identity)
	}
	if got := strings.Join(created, ", "); got != "lease.created agent-a, lease.created agent-b" {
		t.Errorf("audit = %s, want lease.created for agent-a, then for agent-b", got)
	}
	leases := e.mgr.List()
	if len(leases) != 2 || leases[0].Identity != "agent-a" || leases[1].Identity != "agent-b" ||
		leases[0].AcquiredBy != "agent-a" || leases[1].AcquiredBy != "agent-b" || leases[0].ID == leases[1].ID {
		t.Errorf("leases = %+v, want one each for agent-a and agent-b", leases)
	}
}

// curl is what many agents shell out to: -x with NAME:TOKEN in the URL.
func TestCurlWithProxyUserinfo(t *testing.T) {
	e, up, plain := newAuthEnv(t)
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is required: %v", err)
	}
	proxyURL := "http://agent-a:" + tokenA + "@" + e.url.Host
	for _, u := range []string{"https://api.example.test/a/models", "http://localhost/x"} {
		cmd := exec.Command(curl, "-sS", "--max-time", "20", "-x", proxyURL, "--cacert", e.caFile,
			"-H", "Authorization: Bearer placeholder", u)
		cmd.Env = append(os.Environ(), "NO_PROXY=", "no_proxy=")
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "ok" {
			t.Fatalf("curl %s: %v: %q", u, err, out)
		}
	}
	cmd := exec.Command(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://agent-a:wrong-token-0123456789@"+e.url.Host,
		"http://localhost/x")
	if out, _ := cmd.Output(); string(out) != "407" {
		t.Errorf("curl with a wrong token: status %q, want 407", out)
	}
	if a := up.seen()[0].Header.Get("Authorization"); a != "Bearer "+testKey {
		t.Errorf("upstream Authorization via curl = %q, want the injected key", a)
	}
	for _, r := range append(up.seen(), plain.seen()...) {
		if v := r.Header.Get("Proxy-Authorization"); v != "" {
			t.Errorf("Proxy-Authorization reached the upstream: %q", v)
		}
	}
}

// Without clients the fixed identity is the caller's, and a rule that is not
// for it is refused too, never passed on without a credential.
func TestFixedIdentityRefusedByRuleForOthers(t *testing.T) {
	e, _, up, _ := newEnv(t, `  - name: not-mine
    hosts: [api.example.test]
    paths: [/other/]
    identities: [someone-else]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
identity: sidecar-1
`, okHandler)
	code, body := get(t, e.client(e.ca), "https://api.example.test/other/x")
	msg, rule := jsonError(t, strings.NewReader(body))
	if code != 403 || rule != "not-mine" || msg != `rule "not-mine" is not for identity "sidecar-1"` {
		t.Errorf("got %d %q (rule %q), want 403 naming rule not-mine and identity sidecar-1", code, msg, rule)
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
}
