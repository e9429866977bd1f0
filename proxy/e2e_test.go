package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/proxy"
)

const testKey = "sk-test-0123456789abcdef"

const baseConfig = `
listen: 127.0.0.1:0
admin: 127.0.0.1:0
ca: {cert: "{{DIR}}/ca.pem", key: "{{DIR}}/ca-key.pem"}
upstream: {caFiles: ["{{UPSTREAM_CA}}"]}
credentials:
  api: {source: env, env: CREDPROXY_TEST_API_KEY}
  missing: {source: env, env: CREDPROXY_TEST_UNSET_KEY}
rules:
  - name: api
    hosts: [api.example.test]
    paths: [/v1/]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
    remove: [X-Api-Key]
  - name: echo
    hosts: [echo.example.test]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: query
    hosts: [api.example.test]
    paths: [/maps/]
    credential: api
    inject: {query: key, value: "{{ .Value }}"}
  - name: plain
    hosts: [localhost]
    allowPlaintext: true
    credential: api
    inject: {header: X-Api-Key, value: "{{ .Value }}"}
  - name: broken
    hosts: [api.example.test]
    paths: [/missing/]
    credential: missing
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

// newEnv starts an HTTPS upstream for api/echo/other.example.test and a
// plain one for localhost (a loopback rule that opts into plaintext), plus the proxy routed to them.
func newEnv(t *testing.T, extra string, h http.HandlerFunc) (*env, *pki, *upstream, *upstream) {
	t.Helper()
	return newEnvWith(t, baseConfig+extra, h)
}

// newEnvWith is newEnv with a whole config instead of baseConfig+extra.
func newEnvWith(t *testing.T, cfg string, h http.HandlerFunc) (*env, *pki, *upstream, *upstream) {
	t.Helper()
	t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
	p := newPKI(t, t.TempDir())
	up := startUpstream(t, p, true, h)
	plain := startUpstream(t, p, false, h)
	e := startProxy(t, p, cfg, map[string]string{
		"api.example.test:443":   addrOf(up.Server),
		"echo.example.test:443":  addrOf(up.Server),
		"other.example.test:443": addrOf(up.Server),
		"localhost:80":           addrOf(plain.Server),
	})
	return e, p, up, plain
}

func okHandler(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }

func TestInjectsIntoMatchedHostReplacingPlaceholder(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	req, _ := http.NewRequest("GET", "https://api.example.test/v1/models", nil)
	req.Header.Set("Authorization", "Bearer placeholder")
	req.Header.Set("X-Api-Key", "agent-sent-other-key")
	resp, err := e.client(e.ca).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("got %d %q, want 200 ok", resp.StatusCode, body)
	}
	got := up.seen()
	if len(got) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(got))
	}
	if a := got[0].Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+testKey {
		t.Errorf("upstream Authorization = %q, want exactly [Bearer %s]", a, testKey)
	}
	if v := got[0].Header.Get("X-Api-Key"); v != "" {
		t.Errorf("removed header X-Api-Key reached upstream: %q", v)
	}
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].Issuer.CommonName == "" ||
		!strings.Contains(resp.TLS.PeerCertificates[0].Issuer.CommonName, "credproxy local CA") {
		t.Errorf("intercepted host should present a leaf from the proxy's CA")
	}
	if !strings.Contains(e.audit.String(), `"event":"lease.created"`) {
		t.Errorf("audit has no lease.created: %s", e.audit.String())
	}
	if strings.Contains(e.audit.String(), testKey) {
		t.Errorf("audit trail contains the credential value")
	}
}

func TestUnmatchedHostIsTunnelledUntouched(t *testing.T) {
	e, p, up, _ := newEnv(t, "", okHandler)
	req, _ := http.NewRequest("GET", "https://other.example.test/v1/models", nil)
	req.Header.Set("Authorization", "Bearer placeholder")
	// The agent trusts only the upstream's CA: if credproxy intercepted, the
	// handshake would fail.
	resp, err := e.client(p.pool).Do(req)
	if err != nil {
		t.Fatalf("tunnelled request failed (was it intercepted?): %v", err)
	}
	resp.Body.Close()
	if got := resp.TLS.PeerCertificates[0].Issuer.CommonName; got != p.ca.Leaf().Subject.CommonName {
		t.Errorf("client saw a certificate issued by %q, want the upstream's own CA", got)
	}
	if a := up.seen()[0].Header.Get("Authorization"); a != "Bearer placeholder" {
		t.Errorf("tunnelled request was modified: Authorization = %q", a)
	}
}

// rawConnect sends a CONNECT by hand and returns the conn and the response.
func rawConnect(t *testing.T, e *env, authority string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", e.url.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	return c, br, resp
}

func TestUnmatchedDenyRefusesConnect(t *testing.T) {
	e, _, up, _ := newEnv(t, "unmatched: deny\n", okHandler)
	_, _, resp := rawConnect(t, e, "other.example.test:443")
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT to an unmatched host under deny: status %d, want 403", resp.StatusCode)
	}
	if msg, _ := refusedAs(t, resp, "unmatched-denied"); !strings.Contains(msg, "other.example.test:443") {
		t.Errorf("error %q should name the refused destination", msg)
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
}

func TestHostHeaderMismatchInsideTunnelIsMisdirected(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	c, br, resp := rawConnect(t, e, "api.example.test:443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT status %d", resp.StatusCode)
	}
	_ = br // nothing buffered after a 200 with no body
	tc := tls.Client(c, &tls.Config{ServerName: "api.example.test", RootCAs: e.ca})
	// The agent asks the intercepted tunnel for another host: domain fronting.
	fmt.Fprintf(tc, "GET /v1/models HTTP/1.1\r\nHost: echo.example.test\r\nAuthorization: Bearer placeholder\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("status %d, want 421", r.StatusCode)
	}
	if msg, _ := refusedAs(t, r, "misdirected"); !strings.Contains(msg, "api.example.test:443") {
		t.Errorf("error %q should name the CONNECT target", msg)
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("upstream saw %d requests after a Host mismatch, want 0", n)
	}
}

// A credential only ever leaves over TLS that credproxy verified: an
// absolute-form http:// request that a rule matches is refused.
func TestPlainHTTPToRuledHostIsRefused(t *testing.T) {
	e, _, _, plain := newEnv(t, "", okHandler)
	req, _ := http.NewRequest("GET", "http://api.example.test/v1/anything", nil)
	resp, err := e.client(e.ca).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403", resp.StatusCode)
	}
	if msg, rule := refusedAs(t, resp, "cleartext-refused"); rule != "api" || !strings.Contains(msg, "TLS") {
		t.Errorf("error %q (rule %q) should name rule api and say TLS", msg, rule)
	}
	if n := len(plain.seen()); n != 0 {
		t.Errorf("plain upstream saw %d requests, want 0", n)
	}
}

func TestQueryParamInjection(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	resp, err := e.client(e.ca).Get("https://api.example.test/maps/geo?key=placeholder&q=paris")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	q := up.seen()[0].URL.Query()
	if q["key"] == nil || len(q["key"]) != 1 || q.Get("key") != testKey || q.Get("q") != "paris" {
		t.Errorf("upstream query = %v, want key=[%s] and q=paris", q, testKey)
	}
}

func TestMissingCredentialGives502NamingIt(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	resp, err := e.client(e.ca).Get("https://api.example.test/missing/x")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	msg, rule := refusedAs(t, resp, "credential-unavailable")
	// Fixed text only: the credential and its store, never a store's own
	// words (which the log keeps, scrubbed).
	if !strings.Contains(msg, `"missing"`) || !strings.Contains(msg, "env") || rule != "broken" {
		t.Errorf("error %q rule %q: want the credential and its store named, rule broken", msg, rule)
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
}

func TestUntrustedUpstreamCertificateGives502(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
	p := newPKI(t, t.TempDir())
	rogue := newPKI(t, t.TempDir()) // a CA the proxy does not trust
	up := startUpstream(t, rogue, true, okHandler)
	e := startProxy(t, p, baseConfig, map[string]string{"api.example.test:443": addrOf(up.Server)})
	resp, err := e.client(e.ca).Get("https://api.example.test/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	if msg, _ := refusedAs(t, resp, "upstream-error"); !strings.Contains(msg, "certificate") {
		t.Errorf("error %q should say the certificate was not trusted", msg)
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("untrusted upstream received %d requests, want 0", n)
	}
}

func TestEchoedCredentialIsMaskedInResponse(t *testing.T) {
	e, _, _, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		fmt.Fprintf(w, "you sent %s and key=%s", r.Header.Get("Authorization"), strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	})
	resp, err := e.client(e.ca).Get("https://echo.example.test/headers")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), testKey) || strings.Contains(resp.Header.Get("X-Echo"), testKey) {
		t.Fatalf("credential reached the agent: header %q body %q", resp.Header.Get("X-Echo"), body)
	}
	if !strings.Contains(string(body), "[redacted]") {
		t.Errorf("body %q should carry the mask", body)
	}
}

func TestNonProxyRequestGetsJSON400(t *testing.T) {
	e, _, _, _ := newEnv(t, "", okHandler)
	resp, err := http.Get("http://" + e.url.Host + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	if msg, _ := refusedAs(t, resp, "not-a-proxy-request"); !strings.Contains(msg, "forward proxy") {
		t.Errorf("error %q", msg)
	}
}

func TestTunnelToUnreachableHostGivesJSON502(t *testing.T) {
	e, _, _, _ := newEnv(t, "", okHandler)
	_, _, resp := rawConnect(t, e, "nowhere.example.test:443") // no rule, no route
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("CONNECT to an unreachable host: status %d, want 502", resp.StatusCode)
	}
	if msg, _ := refusedAs(t, resp, "upstream-unreachable"); !strings.Contains(msg, "upstream unreachable") {
		t.Errorf("error %q should say the upstream is unreachable", msg)
	}
}

func TestUpstreamDownInsideMITMGivesJSON502(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
	p := newPKI(t, t.TempDir())
	e := startProxy(t, p, baseConfig, map[string]string{"api.example.test:443": "127.0.0.1:1"})
	resp, err := e.client(e.ca).Get("https://api.example.test/v1/models")
	if err != nil {
		t.Fatalf("the agent should get a 502, not a broken connection: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	if msg, rule := refusedAs(t, resp, "upstream-unreachable"); !strings.Contains(msg, "api.example.test:443") || rule != "api" {
		t.Errorf("error %q rule %q: want the destination and rule named", msg, rule)
	}
}

// Hijacked connections have no http.Server timeouts: an agent that opens a
// tunnel and walks away must not pin it forever.
func TestIdleTunnelIsClosed(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
	p := newPKI(t, t.TempDir())
	up := startUpstream(t, p, true, okHandler)
	e := startProxyWith(t, p, baseConfig, map[string]string{"other.example.test:443": addrOf(up.Server)},
		func(o *proxy.Options) { o.IdleTimeout = 100 * time.Millisecond })
	for _, c := range []struct {
		target    string
		handshake bool
	}{
		{"other.example.test:443", false}, // tunnelled
		{"api.example.test:443", false},   // intercepted, never starts TLS
		{"api.example.test:443", true},    // intercepted, TLS done, no request
	} {
		target := c.target
		conn, _, resp := rawConnect(t, e, target)
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT %s: %d", target, resp.StatusCode)
		}
		var rd io.Reader = conn
		if c.handshake {
			tc := tls.Client(conn, &tls.Config{ServerName: "api.example.test", RootCAs: e.ca})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			rd = tc
		}
		closed := make(chan struct{})
		go func() {
			io.Copy(io.Discard, rd) // returns when the proxy closes the idle connection
			close(closed)
		}()
		waitOrFail(t, closed, "the proxy to close an idle tunnel to "+target)
	}
}

// An intercepted host's request that no rule's path or method matches goes
// out untouched (no credential), or is refused under unmatched: deny.
func TestInterceptedHostWithoutMatchingPath(t *testing.T) {
	for _, deny := range []bool{false, true} {
		extra := ""
		if deny {
			extra = "unmatched: deny\n"
		}
		e, _, up, _ := newEnv(t, extra, okHandler)
		req, _ := http.NewRequest("GET", "https://api.example.test/admin/users", nil)
		req.Header.Set("Authorization", "Bearer placeholder")
		resp, err := e.client(e.ca).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		switch {
		case deny && (resp.StatusCode != http.StatusForbidden || len(up.seen()) != 0):
			t.Errorf("deny: status %d, upstream saw %d; want 403 and nothing sent", resp.StatusCode, len(up.seen()))
		case !deny && (resp.StatusCode != 200 || up.seen()[0].Header.Get("Authorization") != "Bearer placeholder"):
			t.Errorf("tunnel: status %d; want 200 with the agent's own header, no credential", resp.StatusCode)
		}
		if strings.Contains(e.audit.String(), "lease.created") {
			t.Errorf("a lease was taken for a request no rule matched (deny=%v)", deny)
		}
	}
}

func TestUpstreamProtocol(t *testing.T) {
	for _, c := range []struct {
		extra string
		major int
	}{
		{"upstream: {caFiles: [\"{{UPSTREAM_CA}}\"]}\n", 2}, // the default
		{"upstream: {caFiles: [\"{{UPSTREAM_CA}}\"], http2: false}\n", 1},
	} {
		t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
		p := newPKI(t, t.TempDir())
		up := startUpstream(t, p, true, okHandler)
		cfg := strings.Replace(baseConfig, "upstream: {caFiles: [\"{{UPSTREAM_CA}}\"]}\n", c.extra, 1)
		e := startProxy(t, p, cfg, map[string]string{"api.example.test:443": addrOf(up.Server)})
		resp, err := e.client(e.ca).Get("https://api.example.test/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if len(up.seen()) != 1 {
			t.Fatalf("config %q: status %d, upstream saw %d requests", c.extra, resp.StatusCode, len(up.seen()))
		}
		if got := up.seen()[0].ProtoMajor; got != c.major {
			t.Errorf("config %q: upstream saw HTTP/%d, want HTTP/%d", c.extra, got, c.major)
		}
	}
}
