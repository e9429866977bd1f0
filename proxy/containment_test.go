package proxy_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/proxy"
)

// tlsInTunnel CONNECTs to authority and starts TLS with credproxy's leaf.
func tlsInTunnel(t *testing.T, e *env, authority string) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c, _, resp := rawConnect(t, e, authority)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: status %d", authority, resp.StatusCode)
	}
	host, _, _ := net.SplitHostPort(authority)
	tc := tls.Client(c, &tls.Config{ServerName: host, RootCAs: e.ca})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc, bufio.NewReader(tc)
}

// Cleartext HTTP inside a CONNECT tunnel to a ruled host must not carry the
// credential out unencrypted.
func TestCleartextInsideConnectIsRefused(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	c, br, resp := rawConnect(t, e, "api.example.test:443")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: status %d", resp.StatusCode)
	}
	fmt.Fprintf(c, "GET /v1/models HTTP/1.1\r\nHost: api.example.test:443\r\nAuthorization: Bearer placeholder\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cleartext request inside a tunnel: status %d, want 403", resp.StatusCode)
	}
	if msg, _ := refusedAs(t, resp, "cleartext-refused"); !strings.Contains(msg, "TLS") {
		t.Errorf("error %q should say the credential only goes over TLS", msg)
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
}

// allowPlaintext is the explicit opt-in, for loopback test services only.
func TestAllowPlaintextOnLoopbackInjects(t *testing.T) {
	e, _, _, plain := newEnv(t, "", okHandler) // rule plain: localhost, allowPlaintext
	resp, err := e.client(e.ca).Get("http://localhost/anything")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if got := plain.seen()[0].Header.Get("X-Api-Key"); got != testKey {
		t.Errorf("plain upstream X-Api-Key = %q, want the credential", got)
	}
}

// One header line of many megabytes is answered with 431 after the limit,
// not read whole into memory.
func TestOversizedHeaderInTunnelGets431(t *testing.T) {
	e, _, up, _ := newEnv(t, "limits: {maxHeaderBytes: 8192}\n", okHandler)
	tc, br := tlsInTunnel(t, e, "api.example.test:443")
	go func() {
		fmt.Fprintf(tc, "GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\nX-Big: ")
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		for i := 0; i < 64; i++ { // 4 MiB, stopped by the proxy closing long before
			if _, err := tc.Write(chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
}

// A client that trickles its headers is disconnected at the header timeout.
func TestSlowHeadersAreCut(t *testing.T) {
	e, _, _, _ := newEnv(t, "limits: {headerTimeout: 200ms}\n", okHandler)
	tc, _ := tlsInTunnel(t, e, "api.example.test:443")
	fmt.Fprintf(tc, "GET /v1/x HTTP/1.1\r\nHost: api.example.test\r\n")
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, tc) // returns when the proxy gives up on us
		close(closed)
	}()
	waitOrFail(t, closed, "the proxy to close a connection whose headers never end")
}

func TestMethodsAndPathsThatMustNotBeInjected(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	cases := []struct {
		method, target string
		status         int
	}{
		{"TRACE", "/v1/x", http.StatusForbidden},
		{"CONNECT", "api.example.test:443", http.StatusForbidden},
		{"GET", "/admin/x/%2e%2e/%2e%2e/v1/", http.StatusForbidden},
		{"GET", "/admin/users/..%2F..%2Fv1/", http.StatusForbidden},
		{"GET", "/v1/../admin", http.StatusForbidden},
	}
	for _, c := range cases {
		tc, br := tlsInTunnel(t, e, "api.example.test:443")
		fmt.Fprintf(tc, "%s %s HTTP/1.1\r\nHost: api.example.test\r\n\r\n", c.method, c.target)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.target, err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: status %d, want %d", c.method, c.target, resp.StatusCode, c.status)
		}
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("upstream saw %d requests, want 0", n)
	}
}

// Methods are case-sensitive tokens: "get" is not the rule's GET.
func TestLowerCaseMethodIsNotInjected(t *testing.T) {
	e, _, up, _ := newEnv(t, `  - name: getonly
    hosts: [other.example.test]
    methods: [GET]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`, okHandler)
	tc, br := tlsInTunnel(t, e, "other.example.test:443")
	fmt.Fprintf(tc, "get /x HTTP/1.1\r\nHost: other.example.test\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, r := range up.seen() {
		if a := r.Header.Get("Authorization"); a != "" {
			t.Errorf("method %q carried Authorization %q upstream", r.Method, a)
		}
	}
}

// The upstream may echo a value credproxy injected earlier on any path of the
// same host, and in any encoding: all of it is masked.
func TestEchoesAreMaskedInEveryForm(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte("x:" + testKey))
	forms := map[string]string{
		"raw":     testKey,
		"base64":  base64.StdEncoding.EncodeToString([]byte(testKey)),
		"b64url":  base64.RawURLEncoding.EncodeToString([]byte(testKey)),
		"hex":     fmt.Sprintf("%x", testKey),
		"percent": percentAll(testKey),
		"basic":   basic,
	}
	e, _, _, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		form := r.URL.Query().Get("form")
		switch r.URL.Path {
		case "/v1/prime":
			io.WriteString(w, "ok")
		case "/other/trailer":
			w.Header().Set("Trailer", "X-Echo")
			io.WriteString(w, "body")
			w.(http.Flusher).Flush() // else a short body gets a Content-Length, and no trailers
			w.Header().Set("X-Echo", testKey)
		case "/other/hints":
			w.Header().Set("Link", "<"+testKey+">")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "ok")
		case "/other/deflate":
			w.Header().Set("Content-Encoding", "deflate")
			fw, _ := flate.NewWriter(w, flate.BestSpeed)
			io.WriteString(fw, "echo "+testKey)
			fw.Close()
		case "/other/br":
			w.Header().Set("Content-Encoding", "br")
			io.WriteString(w, "echo "+testKey)
		default:
			fmt.Fprintf(w, "echo %s end", forms[form])
		}
	})
	c := e.client(e.ca)
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get("https://api.example.test" + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	if resp, _ := get("/v1/prime"); resp.StatusCode != 200 {
		t.Fatalf("priming request: status %d", resp.StatusCode)
	}
	for name, form := range forms {
		_, body := get("/other/echo?form=" + name)
		if strings.Contains(body, form) || strings.Contains(body, testKey) {
			t.Errorf("%s form of the credential reached the agent on a passthrough path: %q", name, body)
		}
	}
	resp, _ := get("/other/trailer")
	if v := resp.Trailer.Get("X-Echo"); strings.Contains(v, testKey) || v == "" {
		t.Errorf("trailer X-Echo = %q, want it present and masked", v)
	}
	var hints []string
	req, _ := http.NewRequest("GET", "https://api.example.test/other/hints", nil)
	req = req.WithContext(withGot1xx(req.Context(), func(h string) { hints = append(hints, h) }))
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
	}
	for _, h := range hints {
		if strings.Contains(h, testKey) {
			t.Errorf("103 Early Hints header reached the agent: %q", h)
		}
	}
	if resp, body := get("/other/deflate"); resp.StatusCode != 200 || strings.Contains(body, testKey) || !strings.Contains(body, "echo [redacted]") {
		t.Errorf("deflate body: status %d %q, want it decoded and masked", resp.StatusCode, body)
	}
	if resp, body := get("/other/br"); resp.StatusCode != http.StatusBadGateway || strings.Contains(body, testKey) {
		t.Errorf("br body: status %d %q, want 502 (it cannot be scanned)", resp.StatusCode, body)
	}
}

// An agent that hangs up cancels the upstream request, instead of leaving
// it (and its goroutines and sockets) to an upstream that never answers.
func TestAgentHangupCancelsUpstream(t *testing.T) {
	cancelled, arrived := make(chan struct{}), make(chan struct{})
	e, _, _, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-r.Context().Done()
		close(cancelled)
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://api.example.test/v1/slow", nil)
	go func() {
		<-arrived
		cancel()
	}()
	if resp, err := e.client(e.ca).Do(req); err == nil {
		resp.Body.Close()
	}
	waitOrFail(t, cancelled, "the upstream request to be cancelled after the agent hung up")
}

// credproxy never forwards to its own listeners, whatever name reaches them.
func TestOwnAddressesAreRefused(t *testing.T) {
	admin := startUpstream(t, nil, false, okHandler) // stands in for the admin listener
	t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
	p := newPKI(t, t.TempDir())
	e := startProxyWith(t, p, baseConfig, nil, func(o *proxy.Options) {
		o.Dial = (&net.Dialer{}).DialContext
		o.Self = []string{addrOf(admin.Server)}
	})
	resp, err := e.client(e.ca).Get("http://" + addrOf(admin.Server) + "/leases")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("plain request to credproxy's own address: status %d, want 403", resp.StatusCode)
	}
	_, _, cresp := rawConnect(t, e, addrOf(admin.Server))
	if cresp.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT to credproxy's own address: status %d, want 403", cresp.StatusCode)
	}
	if n := len(admin.seen()); n != 0 {
		t.Errorf("the admin stand-in saw %d requests, want 0", n)
	}
}

// The agent's Host spelling is not forwarded; no User-Agent is invented; the
// purpose header is bounded and stripped of control characters.
func TestForwardedRequestIsNormalised(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	tc, br := tlsInTunnel(t, e, "api.example.test:443")
	// net/http refuses control characters in header values (400) before
	// credproxy sees them; cleanPurpose drops any that HTTP/2 lets through.
	fmt.Fprintf(tc, "GET /v1/models HTTP/1.1\r\nHost: API.Example.Test.:443\r\nX-Credproxy-Purpose: %s\r\n\r\n",
		strings.Repeat("p", 4000))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := up.seen()[0]
	if got.Host != "api.example.test" {
		t.Errorf("upstream Host = %q, want api.example.test", got.Host)
	}
	if ua, ok := got.Header["User-Agent"]; ok {
		t.Errorf("upstream User-Agent = %q, want none", ua)
	}
	for _, line := range strings.Split(e.audit.String(), "\n") {
		if strings.Contains(line, "ppp") && len(line) > 1024 {
			t.Errorf("audit line carries control characters or an unbounded purpose: %.200q", line)
		}
	}
}

// withGot1xx reports every header value of 1xx responses the client gets.
func withGot1xx(ctx context.Context, fn func(string)) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
		for _, vs := range h {
			for _, v := range vs {
				fn(v)
			}
		}
		return nil
	}})
}

// percentAll escapes every byte, as some clients do.
func percentAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

// upstream.connectTo dials another address but still verifies the upstream
// against the name the rule matched.
func TestConnectToKeepsTheNameForVerification(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
	p := newPKI(t, t.TempDir())
	up := startUpstream(t, p, true, okHandler) // its leaf names api.example.test
	cfg := strings.Replace(baseConfig, `upstream: {caFiles: ["{{UPSTREAM_CA}}"]}`,
		`upstream: {caFiles: ["{{UPSTREAM_CA}}"], connectTo: {"api.example.test:443": "`+addrOf(up.Server)+`", "wrong.example.test:443": "`+addrOf(up.Server)+`"}}`, 1)
	cfg += `  - {name: wrong, hosts: [wrong.example.test], credential: api, inject: {header: Authorization, value: "Bearer {{ .Value }}"}}` + "\n"
	e := startProxyWith(t, p, cfg, nil, func(o *proxy.Options) { o.Dial = (&net.Dialer{}).DialContext })
	resp, err := e.client(e.ca).Get("https://api.example.test/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(up.seen()) != 1 || up.seen()[0].Header.Get("Authorization") != "Bearer "+testKey {
		t.Fatalf("via connectTo: status %d, upstream saw %d requests", resp.StatusCode, len(up.seen()))
	}
	// The same address under a name its certificate does not carry fails
	// verification: connectTo never weakens TLS.
	resp, err = e.client(e.ca).Get("https://wrong.example.test/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || len(up.seen()) != 1 {
		t.Errorf("a name the upstream's certificate lacks: status %d and %d upstream requests, want 502 and still 1", resp.StatusCode, len(up.seen()))
	}
}
