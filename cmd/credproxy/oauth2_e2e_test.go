package main

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/oauthtest"
	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease/leasetest"
)

// oauthEnv is the real authorization server of internal/oauthtest, an HTTPS
// upstream that accepts a request only if its bearer token is active at that
// server (RFC 7662 introspection, as a resource server does), and credproxy
// in front with an oauth2 source.
type oauthEnv struct {
	srv     *oauthtest.Server
	up      *httptest.Server
	seen    atomic.Value // string: the last token the upstream saw
	dir     string
	logs    *testutil.SyncBuffer
	*served // credproxy
	client  *http.Client
}

// The config the README's OAuth2 example shows, with the test's addresses.
const oauthRules = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
identity: test-agent
upstream: {caFiles: [upstream.pem]}
sources:
  idp:
    type: oauth2
    grant: client_credentials
    tokenURL: %[1]s
    clientID: cc-client
    clientSecretFile: client-secret
    scopes: [api]
    revocationURL: %[2]s
    caFile: %[3]s
credentials:
  api: {source: idp, ttl: 15m, idleTimeout: 10m}
rules:
  - name: api
    hosts: ["%[4]s"]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

func newOAuthEnv(t *testing.T, tokenTTL time.Duration) *oauthEnv {
	t.Helper()
	return newOAuthEnvWith(t, tokenTTL, serveOptions{})
}

// newOAuthEnvWith is newOAuthEnv with options (o.Clock: a fake lease clock).
func newOAuthEnvWith(t *testing.T, tokenTTL time.Duration, o serveOptions) *oauthEnv {
	t.Helper()
	e := &oauthEnv{srv: oauthtest.Start(t, tokenTTL), dir: t.TempDir(), logs: &testutil.SyncBuffer{}}
	e.up = httptest.NewTLSServer(http.HandlerFunc(e.resource))
	t.Cleanup(e.up.Close)
	os.WriteFile(filepath.Join(e.dir, "upstream.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.up.Certificate().Raw}), 0o600)
	os.WriteFile(filepath.Join(e.dir, "client-secret"), []byte(e.srv.ClientSecret+"\n"), 0o600)
	writeAdminToken(t, e.dir)
	cfgFile := filepath.Join(e.dir, "rules.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, oauthRules, e.srv.TokenURL, e.srv.RevokeURL, e.srv.CAFile,
		strings.TrimPrefix(e.up.URL, "https://")), 0o600)
	cfg := mustLoad(t, cfgFile)
	o.Log = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.served = startServeWith(t, cfg, o)
	e.client = agent(t, e.proxy, cfg.CA.Cert)
	return e
}

// resource is the upstream API: it asks the authorization server whether
// the bearer token is active, and echoes it (the proxy must mask the echo).
func (e *oauthEnv) resource(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		http.Error(w, "no bearer token", http.StatusUnauthorized)
		return
	}
	e.seen.Store(tok)
	if active, err := e.srv.Introspect(tok); err != nil || !active {
		http.Error(w, fmt.Sprintf("token not active (%v)", err), http.StatusUnauthorized)
		return
	}
	io.WriteString(w, "ok: you sent "+tok)
}

func (e *oauthEnv) get(t *testing.T) (int, string) {
	t.Helper()
	return getAuth(t, e.client, e.up.URL+"/v1/models", "Bearer placeholder")
}

// tryGet is get for other goroutines than the test's: it returns an error
// instead of failing the test.
func (e *oauthEnv) tryGet() error {
	req, _ := http.NewRequest(http.MethodGet, e.up.URL+"/v1/models", nil)
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return nil
}

// The upstream gets a token the authorization server minted and calls
// active; the agent never sees it (not even echoed), nor do logs or audit.
func TestOAuth2TokenThroughProxy(t *testing.T) {
	e := newOAuthEnv(t, time.Hour)
	code, body := e.get(t)
	tok, _ := e.seen.Load().(string)
	if code != http.StatusOK || !strings.HasPrefix(body, "ok: you sent ") || tok == "" || tok == "placeholder" {
		t.Fatalf("got %d %q; want 200 with the minted token sent upstream", code, body)
	}
	if !strings.Contains(testutil.AuditEvents(e.audit.String()), "lease.created") {
		t.Errorf("no lease.created in the audit trail:\n%s", e.audit.String())
	}
	for name, text := range map[string]string{"agent body": body, "logs": e.logs.String(), "audit": e.audit.String()} {
		for _, s := range []string{tok, e.srv.ClientSecret} {
			if strings.Contains(text, s) {
				t.Errorf("%s carries a secret: %s", name, text)
			}
		}
	}
	if st := e.srv.Stats(t); st.ClientCredentials != 1 {
		t.Errorf("server minted %d; want 1", st.ClientCredentials)
	}
	// Shutdown revokes the lease, at the provider too.
	if err := e.shutdown(t); err != nil {
		t.Fatal(err)
	}
	if active, err := e.srv.Introspect(tok); err != nil || active {
		t.Errorf("after shutdown the token is active=%v (%v); want revoked", active, err)
	}
}

// Concurrent first requests through the proxy share one token: the server
// mints once.
func TestOAuth2ConcurrentFirstRequestsThroughProxy(t *testing.T) {
	e := newOAuthEnv(t, time.Hour)
	// Each request is a CONNECT, two TLS handshakes and an introspection
	// at the server: 50 at once fit the client's timeout on 2 shared cores
	// under -race with room to spare (200 took 2 to 30s). The lease/oauth2
	// test sends 1000 concurrent first Gets to the manager.
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.tryGet()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if st := e.srv.Stats(t); st.ClientCredentials != 1 {
		t.Errorf("server minted %d tokens for %d concurrent first requests; want 1", st.ClientCredentials, n)
	}
}

// With the authorization server down the agent gets a 502 naming the
// credential; once it is back, requests succeed again.
func TestOAuth2ServerDownIsA502AndRecovers(t *testing.T) {
	e := newOAuthEnv(t, time.Hour)
	e.srv.Stop()
	code, body := e.get(t)
	if detail := credentialUnavailable(t, code, body); code != http.StatusBadGateway ||
		!strings.Contains(detail, `credential "api"`) || !strings.Contains(detail, "store idp unavailable") {
		t.Fatalf("with the authorization server down: %d %s; want 502 naming the credential and source", code, body)
	}
	if strings.Contains(body, e.srv.ClientSecret) || strings.Contains(e.logs.String(), e.srv.ClientSecret) {
		t.Error("the client secret leaked")
	}
	e.srv.Restart(t)
	testutil.WaitFor(t, func() bool { code, _ := e.get(t); return code == http.StatusOK }, "recovery once the server is back")
}

// The README's Vertex AI example: a Google service-account key, its
// token_uri overridden by tokenURL to a local token endpoint that verifies
// the signed JWT with golang-jwt; the "Vertex" upstream accepts only tokens
// that endpoint issued.
const vertexRules = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
identity: test-agent
upstream: {caFiles: [upstream.pem]}
sources:
  gcp:
    type: oauth2
    grant: jwt_bearer
    keyFile: %[1]s
    scopes: [https://www.googleapis.com/auth/cloud-platform]
    tokenURL: %[2]s
    caFile: %[3]s
credentials:
  vertex: {source: gcp, ttl: 30m}
rules:
  - name: vertex
    hosts: ["%[4]s"]
    credential: vertex
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

func TestVertexServiceAccountThroughProxy(t *testing.T) {
	g := oauthtest.StartGoogleTokenServer(t)
	var seen atomic.Value
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		seen.Store(tok)
		if !g.Valid(tok) {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, `{"candidates":[]}`)
	}))
	defer up.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "upstream.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600)
	writeAdminToken(t, dir)
	cfgFile := filepath.Join(dir, "rules.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, vertexRules, g.KeyFile, g.TokenURL, g.CAFile, strings.TrimPrefix(up.URL, "https://")), 0o600)
	cfg := mustLoad(t, cfgFile)
	s := startServe(t, cfg)
	c := agent(t, s.proxy, cfg.CA.Cert)
	req, _ := http.NewRequest(http.MethodPost, up.URL+"/v1/projects/p/locations/us-central1/publishers/google/models/gemini:generateContent", strings.NewReader("{}"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, refused := g.Mints()
		t.Fatalf("got %d %s; want 200 (endpoint refused: %v)", resp.StatusCode, b, refused)
	}
	if tok, _ := seen.Load().(string); !strings.HasPrefix(tok, "ya29.") || strings.Contains(string(b), tok) {
		t.Errorf("upstream saw %.10q; the agent must not see it", tok)
	}
	if m, _ := g.Mints(); m != 1 {
		t.Errorf("%d tokens minted; want 1", m)
	}
}

// leaseInfo is one lease of the admin API's GET /leases.
type leaseInfo struct {
	ID, State       string
	Issued, Expires time.Time
}

// currentLease waits for the current lease (not one rotated out) whose id
// is not notID, as the admin API lists it.
func (e *oauthEnv) currentLease(t *testing.T, notID string) leaseInfo {
	t.Helper()
	var got leaseInfo
	testutil.WaitFor(t, func() bool {
		code, body := e.adminRequest(t, http.MethodGet, "/leases", e.adminToken)
		var ls []leaseInfo
		if code != http.StatusOK || json.Unmarshal([]byte(body), &ls) != nil {
			t.Fatalf("GET /leases: %d %s", code, body)
		}
		for _, l := range ls {
			if l.ID != notID && l.State != "retiring" {
				got = l
				return true
			}
		}
		return false
	}, "a current lease other than "+notID)
	return got
}

// Steady use of 2s tokens through the proxy: every request succeeds (the
// upstream introspects each token at the real server) while the token is
// re-minted before it expires. Lease time is a fake clock moved in 100ms
// steps; a due rotation is awaited through the admin API before time moves on.
func TestOAuth2ShortTokensSteadyUseThroughProxy(t *testing.T) {
	clock := leasetest.NewClock(time.Now())
	e := newOAuthEnvWith(t, 2*time.Second, serveOptions{Clock: clock})
	if code, body := e.get(t); code != http.StatusOK {
		t.Fatalf("first request: %d %s", code, body)
	}
	cur := e.currentLease(t, "")
	tokens := map[string]bool{e.seen.Load().(string): true}
	for i := 1; i <= 30; i++ { // 3s of fake time
		clock.Advance(100 * time.Millisecond)
		if term := cur.Expires.Sub(cur.Issued); !clock.Now().Before(cur.Expires.Add(-term / 2)) {
			old := cur
			cur = e.currentLease(t, old.ID)
			if !cur.Issued.Before(old.Expires) {
				t.Fatalf("replacement issued %v, after the old token's expiry %v", cur.Issued, old.Expires)
			}
		}
		if code, body := e.get(t); code != http.StatusOK {
			t.Fatalf("step %d: %d %s; want every request to succeed", i, code, body)
		}
		tokens[e.seen.Load().(string)] = true
	}
	st := e.srv.Stats(t)
	if len(tokens) < 3 || st.ClientCredentials != len(tokens) {
		t.Errorf("%d distinct tokens upstream, %d minted over 3s of <=2s tokens; want >= 3, equal", len(tokens), st.ClientCredentials)
	}
}

// An idle token is revoked at the provider and audited with reason idle.
func TestOAuth2IdleTokenRevokedThroughProxy(t *testing.T) {
	clock := leasetest.NewClock(time.Now())
	e := newOAuthEnvWith(t, time.Hour, serveOptions{Clock: clock})
	if code, body := e.get(t); code != http.StatusOK {
		t.Fatalf("first request: %d %s", code, body)
	}
	tok := e.seen.Load().(string)
	clock.Advance(10 * time.Minute) // the credential's idleTimeout
	testutil.WaitFor(t, func() bool { return strings.Contains(e.audit.String(), `"reason":"idle"`) }, "the idle revocation in the audit trail")
	if active, err := e.srv.Introspect(tok); err != nil || active {
		t.Errorf("idle token active=%v (%v) at the server; want revoked", active, err)
	}
	if got := testutil.AuditEvents(e.audit.String()); got != "lease.created,lease.revoked" {
		t.Errorf("audit events %s; want lease.created,lease.revoked", got)
	}
}
