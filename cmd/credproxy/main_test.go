package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
)

const testKey = "sk-test-cmd-0123456789"

// TestMain lets a test run this binary as the real credproxy process:
// with CREDPROXY_TEST_MAIN set, the test binary is main.
func TestMain(m *testing.M) {
	if os.Getenv("CREDPROXY_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestCheckNamesFileLineAndField(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:3128\nleases:\n  idleTimeout: soon\n"), 0o600)
	var out, errb bytes.Buffer
	code := runMain(context.Background(), []string{"check", "--config", cfg}, &out, &errb)
	if code != 1 {
		t.Fatalf("check on a bad config exited %d, want 1", code)
	}
	if want := cfg + ":3: leases.idleTimeout"; !strings.Contains(errb.String(), want) {
		t.Errorf("stderr %q should contain %q", errb.String(), want)
	}
}

func TestVersionAndUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runMain(context.Background(), []string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "credproxy ") {
		t.Errorf("version: code %d out %q", code, out.String())
	}
	if code := runMain(context.Background(), []string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command exited %d, want 2", code)
	}
}

// fixture is an HTTPS upstream that requires the real key, and a config
// whose one rule names it by IP literal and trusts its certificate.
type fixture struct {
	dir, cfg string
	up       *httptest.Server
	mu       sync.Mutex
	auths    []string
}

func newFixture(t *testing.T, leases string) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.up = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.auths = append(f.auths, r.Header.Get("Authorization"))
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testKey {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(f.up.Close)
	upCA := filepath.Join(f.dir, "upstream.pem")
	os.WriteFile(upCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.up.Certificate().Raw}), 0o600)
	host := strings.TrimPrefix(f.up.URL, "https://")
	f.cfg = filepath.Join(f.dir, "rules.yaml")
	os.WriteFile(f.cfg, []byte(`
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
identity: test-agent
upstream: {caFiles: [upstream.pem]}
`+leases+`
credentials:
  key: {source: env, env: CREDPROXY_CMD_TEST_KEY}
rules:
  - name: up
    hosts: ["`+host+`"]
    credential: key
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`), 0o600)
	writeAdminToken(t, f.dir)
	t.Setenv("CREDPROXY_CMD_TEST_KEY", testKey)
	return f
}

// agent is an http.Client that uses the proxy and trusts its CA.
func agent(t *testing.T, proxyAddr, caFile string) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	pu, _ := url.Parse("http://" + proxyAddr)
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	return getAuth(t, c, u, "")
}

// getAuth is get with an Authorization header (none when auth is ""): what
// the agent's SDK sends, a placeholder credproxy replaces.
func getAuth(t *testing.T, c *http.Client, u, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeMetricsLeasesAndRevokeOnShutdown(t *testing.T) {
	f := newFixture(t, "")
	cfg := mustLoad(t, f.cfg)
	s := startServe(t, cfg)
	proxyAddr, adminAddr, audit := s.proxy, s.admin, s.audit
	c := agent(t, proxyAddr, cfg.CA.Cert)
	for range 3 {
		if code, body := get(t, c, f.up.URL+"/v1/x"); code != 200 || body != "ok" {
			t.Fatalf("through proxy: %d %q", code, body)
		}
	}

	_, scrape := get(t, http.DefaultClient, "http://"+adminAddr+"/metrics")
	for _, want := range []string{
		`credproxy_requests_total{outcome="injected",rule="up",status_class="2xx"} 3`,
		`credproxy_leases_active{credential="key"} 1`,
		`credproxy_lease_operations_total{credential="key",op="acquire",result="ok"} 1`,
		`credproxy_upstream_request_duration_seconds_count{rule="up"} 3`,
		`credproxy_cert_cache_requests_total{result="miss"} 1`,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(scrape, testKey) {
		t.Error("/metrics contains the credential value")
	}
	if code, body := s.adminRequest(t, "GET", "/leases", ""); code != http.StatusUnauthorized {
		t.Errorf("/leases without the admin token: %d %s, want 401", code, body)
	}
	if code, body := s.adminRequest(t, "GET", "/leases", "not-"+adminToken); code != http.StatusUnauthorized {
		t.Errorf("/leases with a wrong admin token: %d %s, want 401", code, body)
	}
	_, leases := s.adminRequest(t, "GET", "/leases", adminToken)
	var infos []map[string]any
	if err := json.Unmarshal([]byte(leases), &infos); err != nil || len(infos) != 1 || infos[0]["credential"] != "key" {
		t.Errorf("/leases = %s, want one lease for credential key", leases)
	}
	if strings.Contains(leases, testKey) {
		t.Error("/leases contains the credential value")
	}
	if code, body := get(t, http.DefaultClient, "http://"+adminAddr+"/ca.pem"); code != 200 || !strings.Contains(body, "BEGIN CERTIFICATE") || strings.Contains(body, "PRIVATE") {
		t.Errorf("/ca.pem: %d %q", code, body)
	}

	if err := s.shutdown(t); err != nil {
		t.Fatalf("serve returned %v after shutdown", err)
	}
	if !regexp.MustCompile(`"event":"lease.revoked".*"reason":"shutdown"`).MatchString(audit.String()) {
		t.Errorf("audit has no lease.revoked with reason shutdown:\n%s", audit.String())
	}
	if strings.Contains(audit.String(), testKey) {
		t.Error("audit trail contains the credential value")
	}
}

// TestIdleLeaseIsRevokedAndReacquired drives the idle timeout with a fake
// clock: created, then revoked (idle) once the clock passes idleTimeout, then
// created again on the next request. Real time never ends a lease here, so a
// slow machine cannot reorder the events.
func TestIdleLeaseIsRevokedAndReacquired(t *testing.T) {
	f := newFixture(t, "leases: {defaultTTL: 20m, maxTTL: 1h, renewBeforeExpiry: 5m, idleTimeout: 2m}")
	cfg := mustLoad(t, f.cfg)
	clock := leasetest.NewClock(time.Now())
	s := startServeWith(t, cfg, serveOptions{Clock: clock})
	audit := s.audit
	c := agent(t, s.proxy, cfg.CA.Cert)
	if code, _ := get(t, c, f.up.URL+"/first"); code != 200 {
		t.Fatalf("first request: %d", code)
	}
	clock.Advance(time.Minute)
	if got := testutil.AuditEvents(audit.String()); got != "lease.created" {
		t.Fatalf("audit events after 1m idle: %s, want lease.created only", got)
	}
	clock.Advance(time.Minute)
	testutil.WaitFor(t, func() bool { return strings.Contains(audit.String(), `"reason":"idle"`) }, "an idle revocation in the audit trail")
	if code, _ := get(t, c, f.up.URL+"/second"); code != 200 {
		t.Fatalf("request after the idle revocation: %d", code)
	}
	if got := testutil.AuditEvents(audit.String()); got != "lease.created,lease.revoked,lease.created" {
		t.Errorf("audit events %s, want lease.created,lease.revoked,lease.created", got)
	}
}

// The admin API is reachable by the agent: without the token it lists and
// revokes nothing.
func TestAdminLeaseRoutesNeedTheToken(t *testing.T) {
	f := newFixture(t, "")
	cfg := mustLoad(t, f.cfg)
	s := startServe(t, cfg)
	c := agent(t, s.proxy, cfg.CA.Cert)
	if code, _ := get(t, c, f.up.URL+"/v1/x"); code != 200 {
		t.Fatalf("through proxy: %d", code)
	}
	_, leases := s.adminRequest(t, "GET", "/leases", adminToken)
	var infos []lease.Info
	if err := json.Unmarshal([]byte(leases), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("/leases with the token = %s (%v), want one lease", leases, err)
	}
	revoke := "/leases/" + infos[0].ID + "/revoke"
	for _, auth := range []string{"", "wrong-token-0123456789abcdef", adminToken[:8]} {
		if code, body := s.adminRequest(t, "POST", revoke, auth); code != http.StatusUnauthorized {
			t.Errorf("POST %s with token %q: %d %s, want 401", revoke, auth, code, body)
		}
	}
	if got := testutil.AuditEvents(s.audit.String()); got != "lease.created" {
		t.Fatalf("audit events after refused revocations: %s, want lease.created only", got)
	}
	if code, body := s.adminRequest(t, "POST", revoke, adminToken); code != http.StatusOK {
		t.Fatalf("POST %s with the token: %d %s, want 200", revoke, code, body)
	}
	for _, p := range []string{"/metrics", "/healthz", "/readyz", "/ca.pem"} {
		if code, body := s.adminRequest(t, "GET", p, ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d %s, want 200", p, code, body)
		}
	}
}

// Without admin.tokenFile the lease routes are closed, not open.
func TestAdminWithoutTokenFileRefusesLeaseRoutes(t *testing.T) {
	f := newFixture(t, "")
	cfg := mustLoad(t, f.cfg)
	cfg.AdminTokenFile = ""
	s := startServe(t, cfg)
	for _, auth := range []string{"", adminToken} {
		if code, body := s.adminRequest(t, "GET", "/leases", auth); code != http.StatusForbidden || !strings.Contains(body, "admin.tokenFile") {
			t.Errorf("/leases with no tokenFile configured (auth %q): %d %s, want 403 naming admin.tokenFile", auth, code, body)
		}
	}
}

// TestSIGTERMRevokesEveryLease runs credproxy as a real process and stops it
// with SIGTERM.
func TestSIGTERMRevokesEveryLease(t *testing.T) {
	f := newFixture(t, "")
	cmd := exec.Command(os.Args[0], "run", "--config", f.cfg)
	cmd.Env = append(os.Environ(), "CREDPROXY_TEST_MAIN=1")
	audit := &testutil.SyncBuffer{}
	cmd.Stdout = audit
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	proxyAddr := ""
	sc := bufio.NewScanner(stderr)
	re := regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			proxyAddr = m[1]
			break
		}
	}
	if proxyAddr == "" {
		t.Fatal("credproxy never printed its listen address")
	}
	go io.Copy(io.Discard, stderr)
	c := agent(t, proxyAddr, filepath.Join(f.dir, "credproxy-ca.pem"))
	if code, _ := get(t, c, f.up.URL+"/v1/x"); code != 200 {
		t.Fatalf("status %d", code)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("credproxy exited with %v after SIGTERM, want status 0", err)
	}
	created := strings.Count(audit.String(), `"event":"lease.created"`)
	revoked := len(regexp.MustCompile(`"event":"lease.revoked"[^\n]*"reason":"shutdown"`).FindAllString(audit.String(), -1))
	if created != 1 || revoked != created {
		t.Errorf("created %d leases, revoked %d at shutdown; want 1 and 1:\n%s", created, revoked, audit.String())
	}
}
