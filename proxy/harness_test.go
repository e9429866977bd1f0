package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	execsource "github.com/credproxy/credproxy/lease/exec"
	"github.com/credproxy/credproxy/lease/static"
	"github.com/credproxy/credproxy/proxy"
	"github.com/credproxy/credproxy/rules"
)

// pki is a test CA for upstream servers, separate from the proxy's own CA,
// so a test can tell which of the two signed what the client saw.
type pki struct {
	certFile string
	pool     *x509.CertPool
	ca       *proxy.CA
}

func newPKI(t testing.TB, dir string) *pki {
	t.Helper()
	certFile, keyFile := filepath.Join(dir, "upstream-ca.pem"), filepath.Join(dir, "upstream-ca-key.pem")
	ca, _, err := proxy.LoadOrCreateCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM())
	return &pki{certFile: certFile, pool: pool, ca: ca}
}

// upstream is a real TLS (or plain) server on 127.0.0.1 whose certificate
// names the test hosts, reached through the proxy's test dialer.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func (u *upstream) seen() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.reqs...)
}

func startUpstream(t testing.TB, p *pki, tlsOn bool, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Clone(context.Background()))
		u.mu.Unlock()
		h(w, r)
	}))
	if tlsOn {
		cert, err := p.ca.SignLeaf("api.example.test", "other.example.test", "echo.example.test", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		u.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
		u.EnableHTTP2 = true
		u.StartTLS()
	} else {
		u.Start()
	}
	t.Cleanup(u.Close)
	return u
}

// env is a running proxy with its config, CA and lease manager.
type env struct {
	t       testing.TB
	dir     string
	url     *url.URL
	ca      *x509.CertPool
	caFile  string
	mgr     *lease.Manager
	px      *proxy.Proxy
	audit   *testutil.SyncBuffer
	routes  map[string]string // dialled host:port -> real 127.0.0.1 address
	dialled []string
	mu      sync.Mutex
}

// startProxy writes cfgYAML (with {{UPSTREAM_CA}} and {{DIR}} replaced) to a
// temp dir, loads it and serves a proxy on 127.0.0.1. routes maps the
// host:port the proxy dials to the test server that answers.
func startProxy(t testing.TB, p *pki, cfgYAML string, routes map[string]string) *env {
	t.Helper()
	return startProxyWith(t, p, cfgYAML, routes, nil)
}

// startProxyWith is startProxy with a hook to adjust the proxy's options.
func startProxyWith(t testing.TB, p *pki, cfgYAML string, routes map[string]string, adjust func(*proxy.Options)) *env {
	t.Helper()
	dir := t.TempDir()
	cfgYAML = strings.ReplaceAll(cfgYAML, "{{UPSTREAM_CA}}", p.certFile)
	cfgYAML = strings.ReplaceAll(cfgYAML, "{{DIR}}", dir)
	cfgFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := rules.Load(cfgFile)
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	e := &env{t: t, dir: dir, routes: routes, audit: &testutil.SyncBuffer{}, caFile: cfg.CA.Cert}
	ca, _, err := proxy.LoadOrCreateCA(cfg.CA.Cert, cfg.CA.Key)
	if err != nil {
		t.Fatal(err)
	}
	e.ca = x509.NewCertPool()
	e.ca.AppendCertsFromPEM(ca.PEM())
	var creds []lease.Credential
	for name, c := range cfg.Credentials {
		var src lease.Source = static.Env{Var: c.Env}
		if c.Source == "file" {
			src = static.File{Path: c.File}
		}
		if s := cfg.Sources[c.Source]; s != nil && s.Type == rules.SourceExec {
			x, err := execsource.New(execsource.Config{Name: s.Name, Command: s.Exec.Command,
				RevokeCommand: s.Exec.RevokeCommand, Dir: s.Exec.Dir, Env: s.Exec.Env, Timeout: s.Exec.Timeout})
			if err != nil {
				t.Fatal(err)
			}
			src = x
		}
		creds = append(creds, lease.Credential{Name: name, SourceName: c.Source, Source: src, Policy: lease.Policy{
			TTL: c.Policy.DefaultTTL, MaxTTL: c.Policy.MaxTTL, RenewBeforeExpiry: c.Policy.RenewBeforeExpiry,
			IdleTimeout: c.Policy.IdleTimeout, AutoRenew: c.Policy.AutoRenew, PerIdentity: c.Scope == rules.ScopeIdentity,
			PerTask: c.Scope == rules.ScopeTask,
		}})
	}
	log := slog.New(slog.NewTextHandler(testutil.LogWriter{T: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.mgr = lease.NewManager(creds, lease.Options{Audit: lease.NewAuditor(e.audit), Logger: log})
	opts := proxy.Options{Config: cfg, CA: ca, Credentials: e.mgr, Logger: log, Dial: e.dial}
	if adjust != nil {
		adjust(&opts)
	}
	e.px, err = proxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.px)
	t.Cleanup(func() {
		srv.Close()
		e.px.Close()
		_ = e.mgr.Shutdown(context.Background())
	})
	e.url, _ = url.Parse(srv.URL)
	return e
}

// dial stands in for DNS: the proxy may only reach hosts the test routed,
// and the test can see exactly which authority the proxy asked for.
func (e *env) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	e.mu.Lock()
	e.dialled = append(e.dialled, addr)
	real, ok := e.routes[addr]
	e.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("test dialer: no route to %s", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

// client returns an agent's http.Client: proxy set, trusting roots.
func (e *env) client(roots *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(e.url),
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}, Timeout: 30 * time.Second}
}

func addrOf(s *httptest.Server) string {
	return strings.TrimPrefix(strings.TrimPrefix(s.URL, "https://"), "http://")
}

// problemJSON is a credproxy refusal body: RFC 9457 problem details plus
// the rule, credential and error extension members.
type problemJSON struct {
	Type, Title, Detail, Rule, Credential string
	Status                                int
	Error                                 *string
}

// problemOf checks that resp is a credproxy refusal, headers and body (see
// checkProblem), and returns its body.
func problemOf(t testing.TB, resp *http.Response) problemJSON {
	t.Helper()
	for k, want := range map[string]string{
		"Content-Type": "application/problem+json", "Cache-Control": "no-store", "X-Credproxy-Error": "1",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("refusal %d: %s %q, want %q", resp.StatusCode, k, got, want)
		}
	}
	p := checkProblem(t, resp.Body)
	if p.Status != resp.StatusCode {
		t.Errorf("refusal %d: body status %d, want the response's", resp.StatusCode, p.Status)
	}
	return p
}

// refusedAs checks resp with problemOf and that its type is
// urn:credproxy:problem:slug; it returns the detail and the rule.
func refusedAs(t testing.TB, resp *http.Response, slug string) (msg, rule string) {
	t.Helper()
	p := problemOf(t, resp)
	if want := "urn:credproxy:problem:" + slug; p.Type != want {
		t.Errorf("refusal %d %q: type %q, want %q", resp.StatusCode, p.Detail, p.Type, want)
	}
	return p.Detail, p.Rule
}

// checkProblem decodes a refusal body and checks its shape: a known problem
// type with that type's title and status, a detail, and error == detail.
func checkProblem(t testing.TB, body io.Reader) problemJSON {
	t.Helper()
	data, _ := io.ReadAll(body)
	var p problemJSON
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatalf("refusal body is not JSON: %q: %v", data, err)
	}
	title, status, ok := proxy.ProblemKind(p.Type)
	switch {
	case !ok:
		t.Errorf("refusal body %s: type %q is not a credproxy problem type", data, p.Type)
	case p.Title != title || p.Status != status:
		t.Errorf("refusal body %s: title %q, status %d; want %q, %d for %s", data, p.Title, p.Status, title, status, p.Type)
	}
	if p.Detail == "" || p.Error == nil || *p.Error != p.Detail {
		t.Errorf("refusal body %s: want a detail and an error member equal to it", data)
	}
	return p
}

// jsonError checks a refusal body (checkProblem) and returns its detail and
// rule. With the response at hand, problemOf checks its headers too.
func jsonError(t testing.TB, body io.Reader) (msg, rule string) {
	t.Helper()
	p := checkProblem(t, body)
	return p.Detail, p.Rule
}

// waitOrFail turns a would-be deadlock into a failure that says what hung.
func waitOrFail(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	if !waitOrErr(t, ch, what) {
		t.FailNow()
	}
}

// waitOrErr is waitOrFail for goroutines other than the test's own.
func waitOrErr(t testing.TB, ch <-chan struct{}, what string) bool {
	t.Helper()
	select {
	case <-ch:
		return true
	case <-time.After(20 * time.Second):
		t.Errorf("timed out waiting for %s", what)
		return false
	}
}
