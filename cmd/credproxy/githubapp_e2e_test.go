package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/githubtest"
	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease/leasetest"
)

// githubRules is the README's GitHub App example, on test addresses: the
// REST API with a Bearer token, and git over HTTPS with Basic
// x-access-token:TOKEN. %[1]s is the fake GitHub's URL, %[2]s the API's
// host:port, %[3]s the source timeout, %[4]s the idle timeout.
const githubRules = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
identity: test-agent
upstream: {caFiles: [upstream.pem], dialTimeout: 60s}   # 1,000 requests at once on a loaded CI machine
sources:
  github:
    type: github_app
    appID: 4242
    installationID: 777
    privateKeyFile: github-app.pem
    baseURL: "%[1]s"
    caFile: github-ca.pem
    timeout: %[3]s
    permissions: {contents: read, metadata: read}
    repositories: [widgets]
credentials:
  github: {source: github, ttl: 15m, renewBeforeExpiry: 5m, idleTimeout: %[4]s}
rules:
  - name: github-api
    hosts: ["%[2]s"]
    paths: [/repos/]
    credential: github
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: github-git
    hosts: ["%[2]s"]
    paths: ["/*/*/info/refs", "/*/*/git-upload-pack"]
    credential: github
    inject: {header: Authorization, value: '{{ basic "x-access-token" .Value }}'}
`

// githubEnv is credproxy (on a fake clock) in front of a fake GitHub that
// mints tokens and an API upstream that accepts only live ones.
type githubEnv struct {
	gh      *githubtest.Server
	api     *httptest.Server
	clock   *leasetest.Clock
	dir     string
	logs    *testutil.SyncBuffer
	*served // proxy and admin addresses, audit trail, shutdown
	client  *http.Client
	cfgFile string
}

type githubOpts struct {
	tokenTTL time.Duration // default 1h
	timeout  string        // the source's timeout, default 10s
	idle     string        // the credential's idleTimeout, default 1m
}

func newGitHubEnv(t *testing.T, o githubOpts) *githubEnv {
	t.Helper()
	if o.tokenTTL == 0 {
		o.tokenTTL = time.Hour
	}
	if o.timeout == "" {
		o.timeout = "10s"
	}
	if o.idle == "" {
		o.idle = "1m"
	}
	// A whole second, like GitHub's expires_at: the test knows each
	// token's term to the nanosecond.
	e := &githubEnv{clock: leasetest.NewClock(time.Now().Truncate(time.Second)), dir: t.TempDir(), logs: &testutil.SyncBuffer{}}
	key := githubtest.Key(t)
	e.gh = githubtest.Start(t, e.clock, 4242, 777, key, o.tokenTTL)
	e.api = httptest.NewUnstartedServer(e.apiHandler())
	e.api.EnableHTTP2 = true // credproxy multiplexes requests to it instead of a handshake each
	e.api.StartTLS()
	t.Cleanup(e.api.Close)
	githubtest.WriteKey(t, e.dir, "github-app.pem", key, true)
	copyFile(t, e.gh.CAFile, filepath.Join(e.dir, "github-ca.pem"))
	os.WriteFile(filepath.Join(e.dir, "upstream.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.api.Certificate().Raw}), 0o600)
	writeAdminToken(t, e.dir)
	e.cfgFile = filepath.Join(e.dir, "rules.yaml")
	os.WriteFile(e.cfgFile, fmt.Appendf(nil, githubRules, e.gh.URL, strings.TrimPrefix(e.api.URL, "https://"), o.timeout, o.idle), 0o600)
	cfg := mustLoad(t, e.cfgFile)
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.served = startServeWith(t, cfg, serveOptions{Clock: e.clock, Log: log})
	e.client = agent(t, e.proxy, cfg.CA.Cert)
	return e
}

// apiHandler is the fake GitHub's API, plus /repos/acme/echo, which
// answers a live token by quoting the Authorization header it got, as a
// debugging endpoint might: credproxy must mask it.
func (e *githubEnv) apiHandler() http.Handler {
	api := e.gh.API()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/repos/acme/echo" {
			api.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			w.WriteHeader(rec.Code)
			return
		}
		io.WriteString(w, "you sent: "+r.Header.Get("Authorization"))
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (e *githubEnv) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return getAuth(t, e.client, e.api.URL+path, "Bearer placeholder") // what the agent's SDK sends; replaced
}

// leaks fails the test if any of secrets, or a line of the app's private
// key, appears in what the agent, the log, the audit trail or the admin API
// could show.
func (e *githubEnv) leaks(t *testing.T, shown map[string]string, secrets ...string) {
	t.Helper()
	keyPEM := base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PrivateKey(githubtest.Key(t)))
	secrets = append(secrets, keyPEM[128:192]) // the third line of the PEM file
	_, leases := e.adminRequest(t, "GET", "/leases", adminToken)
	_, metrics := e.adminRequest(t, "GET", "/metrics", "")
	all := map[string]string{"log": e.logs.String(), "audit": e.audit.String(), "/leases": leases, "/metrics": metrics}
	for k, v := range shown {
		all[k] = v
	}
	for name, text := range all {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("the %s contains a secret (%.12s…):\n%.2000s", name, s, text)
			}
		}
	}
}

func TestGitHubAppTokenIsInjectedAndNeverSeenByTheAgent(t *testing.T) {
	e := newGitHubEnv(t, githubOpts{})
	code, body := e.get(t, "/repos/acme/widgets")
	if code != 200 || body != "ok" {
		t.Fatalf("REST API through credproxy: %d %q", code, body)
	}
	if code, body := e.get(t, "/acme/widgets.git/info/refs?service=git-upload-pack"); code != 200 {
		t.Fatalf("git over HTTPS (Basic x-access-token) through credproxy: %d %q", code, body)
	}
	code, echo := e.get(t, "/repos/acme/echo")
	if code != 200 || !strings.HasPrefix(echo, "you sent: ") || !strings.Contains(echo, "[redacted]") {
		t.Fatalf("echo: %d %q; want 200 with the quoted Authorization masked", code, echo)
	}
	toks := e.gh.Tokens()
	if len(toks) != 1 || e.gh.Mints() != 1 {
		t.Fatalf("%d tokens minted for three requests, want 1", len(toks))
	}
	tok := toks[0]
	if b := tok.Body; b.Permissions["contents"] != "read" || len(b.Repositories) != 1 || b.Repositories[0] != "widgets" {
		t.Errorf("the mint asked for %+v; want the configured narrowing", b)
	}
	seen := e.gh.APISeen()
	if len(seen) != 3 || seen[0] != tok.Value || seen[1] != tok.Value || seen[2] != tok.Value {
		t.Errorf("the API saw %d credentials; want the minted token three times (Bearer, Basic, Bearer)", len(seen))
	}
	if r := e.gh.Rejections(); len(r) != 0 {
		t.Errorf("the fake GitHub rejected app JWTs: %v", r)
	}
	e.leaks(t, map[string]string{"echo": echo}, append(e.gh.JWTs(), tok.Value)...)
	if !strings.Contains(e.audit.String(), `"source_lease_id":"installations/777/token@`) {
		t.Errorf("the audit trail should name the token by installation and expiry:\n%s", e.audit.String())
	}
}

// 1,000 first requests arrive together; all of them wait for one mint. The
// fake holds the mint until every request has been written to credproxy, so
// they really are concurrent. Their connections are opened beforehand (with
// requests no rule matches, which take no lease), so that 1,000 TLS
// handshakes do not stretch the burst.
func TestGitHubAppConcurrentFirstRequestsShareOneMint(t *testing.T) {
	const n = 1000
	e := newGitHubEnv(t, githubOpts{timeout: "60s"})
	tr := e.client.Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = n
	c := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	defer tr.CloseIdleConnections()
	burst(t, n, func(i int) {
		if resp, err := c.Get(e.api.URL + "/warm-up"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	if e.gh.Mints() != 0 || strings.Contains(e.audit.String(), "lease.") {
		t.Fatal("the warm-up requests took a lease")
	}
	release := e.gh.Hold()
	defer release()
	start := time.Now()
	var wrote, done sync.WaitGroup
	wrote.Add(n)
	done.Add(n)
	codes := make([]int, n)
	errs := make([]error, n)
	var nWritten atomic.Int32
	for i := range n {
		go func() {
			defer done.Done()
			var once sync.Once
			written := func() { once.Do(func() { nWritten.Add(1); wrote.Done() }) }
			defer written() // a request that failed before it was written
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { written() },
			})
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/repos/acme/widgets/%d", e.api.URL, i), nil)
			resp, err := c.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	allWritten := make(chan struct{})
	go func() { wrote.Wait(); close(allWritten) }()
	select {
	case <-allWritten:
		t.Logf("all %d requests written to credproxy %v after the first was sent; then the mint went ahead", n, time.Since(start).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		// The lease manager gives a source call 30s: let the mint go before
		// that on a machine too loaded to open 1,000 connections in 20s.
		// The requests still written after this find the lease made.
		t.Logf("released the mint after 20s with %d of %d requests written", nWritten.Load(), n)
	}
	release()
	done.Wait()
	failed := 0
	for i, code := range codes {
		if code != 200 {
			if failed++; failed <= 3 {
				t.Errorf("request %d: status %d, error %v", i, code, errs[i])
			}
		}
	}
	if failed > 0 || e.gh.Mints() != 1 || len(e.gh.JWTs()) != 1 {
		t.Fatalf("%d of %d requests failed; %d mint requests, %d tokens: want all 200 from one mint", failed, n, len(e.gh.JWTs()), e.gh.Mints())
	}
	if got := strings.Count(e.audit.String(), `"event":"lease.created"`); got != 1 {
		t.Errorf("%d leases created, want 1", got)
	}
}

// burst runs f(0) … f(n-1) at once and waits for all of them.
func burst(t *testing.T, n int, f func(i int)) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); f(i) }()
	}
	wg.Wait()
}

// A token lives 2s. Under steady use (a request every 250ms of the fake
// clock) credproxy mints the next one halfway through each token's life and
// no request fails: no lease ever reaches its expiry.
func TestGitHubAppShortTokenIsReMintedBeforeExpiry(t *testing.T) {
	e := newGitHubEnv(t, githubOpts{tokenTTL: 2 * time.Second})
	const steps = 24 // 6s of fake time: six terms of 2s overlapping by half
	for i := range steps {
		if code, body := e.get(t, fmt.Sprintf("/repos/acme/widgets/%d", i)); code != 200 {
			t.Fatalf("request %d at +%v: %d %s", i, time.Duration(i)*250*time.Millisecond, code, body)
		}
		e.clock.Advance(250 * time.Millisecond)
		if (i+1)%4 == 0 { // a whole second: the current token is halfway through its life
			want := (i+1)/4 + 1
			testutil.WaitFor(t, func() bool {
				return e.gh.Mints() == want && strings.Count(e.audit.String(), `"event":"lease.created"`) == want
			}, fmt.Sprintf("mint %d, due one second into the current token's two", want))
		}
	}
	audit := e.audit.String()
	if strings.Contains(audit, `"event":"lease.expired"`) || strings.Contains(audit, `"event":"lease.failed"`) {
		t.Errorf("a lease expired or failed under steady use; want each re-minted before expiry:\n%s", audit)
	}
	if n := strings.Count(audit, `"reason":"rotated"`); n < steps/4-1 {
		t.Errorf("%d rotated-out tokens revoked, want at least %d:\n%s", n, steps/4-1, audit)
	}
	// Each request carried a token that was live at that moment: the API
	// answered 200, and it checks on the same clock.
	if seen := e.gh.APISeen(); len(seen) != steps {
		t.Errorf("the API saw %d requests, want %d", len(seen), steps)
	}
}

// An idle token is deleted at GitHub (and audited); the next request mints
// a new one; shutdown deletes that one.
func TestGitHubAppIdleAndShutdownRevokeAtGitHub(t *testing.T) {
	e := newGitHubEnv(t, githubOpts{idle: "30s"})
	if code, body := e.get(t, "/repos/acme/widgets"); code != 200 {
		t.Fatalf("request: %d %s", code, body)
	}
	first := e.gh.Tokens()[0].Value
	e.clock.Advance(30 * time.Second)
	testutil.WaitFor(t, func() bool { return e.gh.Deletes() == 1 }, "DELETE /installation/token for the idle token")
	testutil.WaitFor(t, func() bool { return strings.Contains(e.audit.String(), `"reason":"idle"`) }, "the idle revocation in the audit trail")
	if e.gh.Live(first) {
		t.Fatal("the idle token is still live at GitHub")
	}
	if code, _ := e.get(t, "/repos/acme/widgets"); code != 200 || e.gh.Mints() != 2 {
		t.Fatalf("after the idle revocation: %d with %d mints, want 200 from a second mint", code, e.gh.Mints())
	}
	second := e.gh.Tokens()[1].Value
	if err := e.shutdown(t); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if e.gh.Live(second) || e.gh.Deletes() != 2 {
		t.Errorf("after shutdown: second token live %v, %d DELETEs; want it deleted", e.gh.Live(second), e.gh.Deletes())
	}
	if got := testutil.AuditEvents(e.audit.String()); got != "lease.created,lease.revoked,lease.created,lease.revoked" {
		t.Errorf("audit events %s", got)
	}
	if !strings.Contains(e.audit.String(), `"reason":"shutdown"`) {
		t.Errorf("no shutdown revocation in the audit trail:\n%s", e.audit.String())
	}
}

func TestGitHubAppOutageIsA502NamingTheCredentialAndRecovers(t *testing.T) {
	e := newGitHubEnv(t, githubOpts{})
	e.gh.Stop()
	code, body := e.get(t, "/repos/acme/widgets")
	if d := credentialUnavailable(t, code, body); code != http.StatusBadGateway || d != `credential "github": store github unavailable` {
		t.Fatalf("with GitHub down: %d %s; want 502 naming the credential", code, body)
	}
	e.gh.Restart()
	e.clock.Advance(time.Second) // past the first backoff (250ms ±20%)
	if code, body := e.get(t, "/repos/acme/widgets"); code != 200 {
		t.Fatalf("with GitHub back: %d %s", code, body)
	}
}

// GitHub (or something in front of it) misbehaves. The agent gets a 502
// with fixed text; the JWT, and what GitHub wrote, reach neither the agent,
// the log nor the audit trail.
func TestGitHubAppHostileMintAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode githubtest.Mode
		want string
	}{
		{"401 quoting the JWT", githubtest.RejectEcho, `access denied by store github (HTTP 4xx)`},
		{"huge body", githubtest.HugeBody, `store github unavailable`},
		{"hung server", githubtest.Hang, `source timed out`},
		{"no expires_at", githubtest.NoExpiry, `store github unavailable`},
		{"garbage expires_at", githubtest.GarbageExpiry, `store github unavailable`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := githubOpts{}
			if tc.mode == githubtest.Hang {
				o.timeout = "300ms" // a short wait for what never comes; the others must not time out
			}
			e := newGitHubEnv(t, o)
			e.gh.SetMode(tc.mode)
			code, body := e.get(t, "/repos/acme/widgets")
			if d := credentialUnavailable(t, code, body); code != http.StatusBadGateway || d != `credential "github": `+tc.want {
				t.Errorf("got %d %s; want 502 with the fixed text %q", code, body, `credential "github": `+tc.want)
			}
			jwts := e.gh.JWTs()
			if len(jwts) != 1 {
				t.Fatalf("%d mint requests, want 1", len(jwts))
			}
			var toks []string
			for _, tok := range e.gh.Tokens() {
				toks = append(toks, tok.Value) // minted but refused by credproxy for its answer's shape
			}
			e.leaks(t, map[string]string{"502 body": body}, append(toks, jwts[0], "JSON web token", strings.Repeat("x", 64))...)
			if !strings.Contains(e.logs.String(), "github app: mint installation token") {
				t.Errorf("the log should say what failed:\n%s", e.logs.String())
			}
		})
	}
}

// A key file that holds an EC key is refused at start, naming the line.
func TestGitHubAppNonRSAKeyIsAConfigError(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ec)
	os.WriteFile(filepath.Join(dir, "github-app.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	writeAdminToken(t, dir)
	for _, f := range []string{"upstream.pem", "github-ca.pem"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o600) // only the key is wrong
	}
	cfg := filepath.Join(dir, "rules.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, githubRules, "https://api.github.com", "api.github.com", "10s", "1m"), 0o600)
	var out, errb bytes.Buffer
	if code := runMain(context.Background(), []string{"check", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("check exited %d, want 1: %s", code, errb.String())
	}
	want := cfg + ":11: sources.github.privateKeyFile: "
	if !strings.HasPrefix(errb.String(), want) || strings.Count(errb.String(), "\n") != 1 ||
		!strings.Contains(errb.String(), "ECDSA") || strings.Contains(errb.String(), "BEGIN") {
		t.Errorf("stderr %q; want only %q naming the ECDSA key, without its content", errb.String(), want)
	}
}
