package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/internal/vaulttest"
	"github.com/credproxy/credproxy/lease/leasetest"
)

// reloadEnv is two HTTPS upstreams, a and b, that each want the real key, and
// a config file the test rewrites. a's /stream sends one event, then holds
// the response open until release is closed.
type reloadEnv struct {
	dir, cfg string
	a, b     *httptest.Server
	release  chan struct{}
	mu       sync.Mutex
	auths    map[string][]string // Authorization seen, by upstream name
}

func newReloadEnv(t *testing.T) *reloadEnv {
	t.Helper()
	e := &reloadEnv{dir: t.TempDir(), release: make(chan struct{}), auths: map[string][]string{}}
	e.a = e.upstream(t, "a")
	e.b = e.upstream(t, "b")
	writeAdminToken(t, e.dir)
	t.Setenv("CREDPROXY_CMD_TEST_KEY", testKey)
	t.Setenv("CREDPROXY_CMD_TEST_OTHER", "sk-test-cmd-other-0123456789")
	return e
}

func (e *reloadEnv) upstream(t *testing.T, name string) *httptest.Server {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		e.mu.Lock()
		e.auths[name] = append(e.auths[name], auth)
		e.mu.Unlock()
		if auth != "Bearer "+testKey && auth != "Bearer sk-test-cmd-other-0123456789" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path != "/stream" {
			io.WriteString(w, "ok "+name)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-e.release:
			io.WriteString(w, "data: second\n\n")
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(up.Close)
	os.WriteFile(filepath.Join(e.dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600)
	return up
}

func hostOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "https://") }

func (e *reloadEnv) lastAuth(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.auths[name]
	if len(a) == 0 {
		return "(none)"
	}
	return a[len(a)-1]
}

// write replaces the config file atomically (a new file renamed over it, as
// editors and `kubectl apply` of a ConfigMap do) with a config whose rules
// and extra credentials are body. Credential key is always there.
func (e *reloadEnv) write(t *testing.T, body string) {
	t.Helper()
	e.writeNamed(t, ".rules.yaml.tmp", body)
}

// configText is the config file for body: rules and extra credentials
// under a fixed head (line 6 is body's first).
func (e *reloadEnv) configText(body string) string {
	return `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
identity: test-agent
upstream: {caFiles: [a.pem, b.pem]}
` + strings.NewReplacer("{{A}}", hostOf(e.a), "{{B}}", hostOf(e.b)).Replace(body)
}

// ruleFor is one rule injecting credential cred on host (a {{A}} or {{B}}).
func ruleFor(name, host, cred string) string {
	return fmt.Sprintf("  - {name: %s, hosts: [\"%s\"], credential: %s, inject: {header: Authorization, value: \"Bearer {{ .Value }}\"}}\n", name, host, cred)
}

const keyOnly = "credentials:\n  key: {source: env, env: CREDPROXY_CMD_TEST_KEY}\n"

// client is an agent that trusts credproxy's CA and both upstreams, so a
// request to a host no rule names any more (tunnelled untouched) reaches it.
func (e *reloadEnv) client(t *testing.T, proxyAddr string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range []string{"credproxy-ca.pem", "a.pem", "b.pem"} {
		b, err := os.ReadFile(filepath.Join(e.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(b)
	}
	pu, _ := url.Parse("http://" + proxyAddr)
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// startReloadable serves the env's config in this process, its log in a
// buffer, and returns the Reloader.
func (e *reloadEnv) start(t *testing.T) (*served, *Reloader, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	var rl *Reloader
	s := startServeWith(t, mustLoad(t, e.cfg), serveOptions{
		Log:      slog.New(slog.NewJSONHandler(logs, nil)),
		Reloader: func(r *Reloader) { rl = r },
	})
	return s, rl, logs
}

func scrapeMetric(t *testing.T, adminAddr, series string) string {
	t.Helper()
	_, body := get(t, http.DefaultClient, "http://"+adminAddr+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return rest
		}
	}
	return ""
}

// A stream open on the old rule finishes on it; requests after the reload
// follow the new rule.
func TestReloadMovesARuleWhileAStreamIsOpen(t *testing.T) {
	e := newReloadEnv(t)
	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{A}}", "key"))
	s, rl, logs := e.start(t)
	c := e.client(t, s.proxy)

	resp, err := c.Get(e.a.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); resp.StatusCode != 200 || line != "data: first\n" {
		t.Fatalf("stream on the old rule: %d %q, want 200 and the first event", resp.StatusCode, line)
	}

	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{B}}", "key"))
	if err := rl.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if code, body := get(t, c, e.b.URL+"/x"); code != 200 || body != "ok b" {
		t.Errorf("b after the reload: %d %q, want the credential injected by the moved rule", code, body)
	}
	if code, _ := get(t, c, e.a.URL+"/x"); code != http.StatusUnauthorized || e.lastAuth("a") != "" {
		t.Errorf("a after the reload: %d, Authorization %q; want it sent on without a credential (401)", code, e.lastAuth("a"))
	}
	close(e.release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "\ndata: second\n\n" {
		t.Errorf("rest of the stream opened before the reload: %q, %v; want the second event", rest, err)
	}
	if got := scrapeMetric(t, s.admin, `credproxy_config_reloads_total{result="ok"}`); got != "1" {
		t.Errorf("reloads ok = %q, want 1", got)
	}
	if !strings.Contains(logs.String(), `"msg":"config reloaded"`) || strings.Contains(logs.String(), testKey) {
		t.Errorf("log: want a config reloaded line and no credential value:\n%s", logs.String())
	}
}

// A file that does not load is refused whole: the old config stays, and the
// log names the file, line and field.
func TestReloadRefusesABrokenFile(t *testing.T) {
	e := newReloadEnv(t)
	good := keyOnly + "rules:\n" + ruleFor("up", "{{A}}", "key")
	e.write(t, good)
	s, rl, logs := e.start(t)
	c := e.client(t, s.proxy)
	before := scrapeMetric(t, s.admin, "credproxy_config_last_reload_success_timestamp_seconds")

	// A rule moved to b, and a bad duration: nothing of it may apply.
	e.write(t, "leases:\n  idleTimeout: soon\n"+keyOnly+"rules:\n"+ruleFor("up", "{{B}}", "key"))
	err := rl.Reload(context.Background())
	if err == nil {
		t.Fatal("Reload of a broken file succeeded")
	}
	want := e.cfg + ":7: leases.idleTimeout"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Reload error %q does not name %s", err, want)
	}
	if !strings.Contains(logs.String(), `"problem":"`+want) || !strings.Contains(logs.String(), `"line":7`) {
		t.Errorf("log does not name %s with its line:\n%s", want, logs.String())
	}
	if strings.Contains(logs.String(), testKey) {
		t.Error("the reload log contains the credential value")
	}
	if code, body := get(t, c, e.a.URL+"/x"); code != 200 || body != "ok a" {
		t.Errorf("a after the refused reload: %d %q, want the old rule still injecting", code, body)
	}
	if code, _ := get(t, c, e.b.URL+"/x"); code != http.StatusUnauthorized {
		t.Errorf("b after the refused reload: %d, want 401 (no rule)", code)
	}
	if got := scrapeMetric(t, s.admin, `credproxy_config_reloads_total{result="error"}`); got != "1" {
		t.Errorf("reloads error = %q, want 1", got)
	}
	if after := scrapeMetric(t, s.admin, "credproxy_config_last_reload_success_timestamp_seconds"); after != before || before == "" || before == "0" {
		t.Errorf("last success timestamp %q → %q, want it set at start and unchanged by a failure", before, after)
	}
}

// leaseIDs lists the held leases by credential, from the admin API.
func leaseIDs(t *testing.T, s *served) map[string]string {
	t.Helper()
	_, body := s.adminRequest(t, "GET", "/leases", adminToken)
	var infos []struct{ ID, Credential string }
	if err := json.Unmarshal([]byte(body), &infos); err != nil {
		t.Fatalf("/leases: %v: %s", err, body)
	}
	ids := map[string]string{}
	for _, i := range infos {
		ids[i.Credential] = i.ID
	}
	return ids
}

// A removed credential's lease is revoked (config_changed); an unchanged
// one keeps its lease; a new one is acquired on first use.
func TestReloadRevokesRemovedCredentialsAndKeepsUnchanged(t *testing.T) {
	e := newReloadEnv(t)
	e.write(t, keyOnly+"  other: {source: env, env: CREDPROXY_CMD_TEST_OTHER}\nrules:\n"+
		ruleFor("up", "{{A}}", "key")+ruleFor("other", "{{B}}", "other"))
	s, rl, _ := e.start(t)
	c := e.client(t, s.proxy)
	for _, u := range []string{e.a.URL, e.b.URL} {
		if code, _ := get(t, c, u+"/x"); code != 200 {
			t.Fatalf("%s before the reload: %d", u, code)
		}
	}
	before := leaseIDs(t, s)
	if before["key"] == "" || before["other"] == "" {
		t.Fatalf("leases before the reload: %v, want key and other", before)
	}

	// other goes; fresh comes (on the same variable: a new definition).
	e.write(t, keyOnly+"  fresh: {source: env, env: CREDPROXY_CMD_TEST_OTHER}\nrules:\n"+
		ruleFor("up", "{{A}}", "key")+ruleFor("fresh", "{{B}}", "fresh"))
	if err := rl.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	// Reload returns once the revocations are done.
	revoked := regexp.MustCompile(`"event":"lease.revoked"[^\n]*`).FindAllString(s.audit.String(), -1)
	if len(revoked) != 1 || !strings.Contains(revoked[0], `"lease_id":"`+before["other"]+`"`) ||
		!strings.Contains(revoked[0], `"reason":"config_changed"`) {
		t.Fatalf("revocations after the reload: %q; want other's lease %s, reason config_changed", revoked, before["other"])
	}
	for _, u := range []string{e.a.URL, e.b.URL} {
		if code, _ := get(t, c, u+"/x"); code != 200 {
			t.Fatalf("%s after the reload: %d", u, code)
		}
	}
	after := leaseIDs(t, s)
	if after["key"] != before["key"] {
		t.Errorf("unchanged credential key: lease %s after the reload, want %s kept", after["key"], before["key"])
	}
	if _, ok := after["other"]; ok || after["fresh"] == "" {
		t.Errorf("leases after the reload: %v; want none for other and one for fresh", after)
	}
	if n := strings.Count(s.audit.String(), `"credential":"key"`); n != 1 {
		t.Errorf("audit lines for key: %d, want 1 (created once, never revoked):\n%s", n, s.audit.String())
	}
	if strings.Contains(s.audit.String(), testKey) {
		t.Error("audit trail contains the credential value")
	}
}

// Concurrent reloads under load: every request that both configs allow
// succeeds, and the shared credential keeps its one lease.
func TestReloadUnderLoad(t *testing.T) {
	e := newReloadEnv(t)
	v1 := keyOnly + "rules:\n" + ruleFor("up", "{{A}}", "key")
	v2 := keyOnly + "  other: {source: env, env: CREDPROXY_CMD_TEST_OTHER}\nrules:\n" +
		ruleFor("other", "{{B}}", "other") + ruleFor("up", "{{A}}", "key")
	e.write(t, v1)
	s, rl, _ := e.start(t)

	var ok, failed atomic.Int64
	errs := make(chan error, 4)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		c := e.client(t, s.proxy)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(e.a.URL + "/x")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					if failed.Add(1) == 1 {
						errs <- err
					}
					continue
				}
				ok.Add(1)
			}
		})
	}
	testutil.WaitFor(t, func() bool { return ok.Load() > 0 }, "a first request through the proxy")
	// Four reloaders, each alternating the two files, until 300 requests
	// have gone through while they ran (or 250 reloads each).
	const overlap, maxEach = 300, 250
	var reloads atomic.Int64
	var rwg sync.WaitGroup
	n0, start := ok.Load(), time.Now()
	for w := range 4 {
		rwg.Go(func() {
			for i := 0; i < maxEach && ok.Load() < n0+overlap; i++ {
				body := v1
				if (w+i)%2 == 0 {
					body = v2
				}
				// Writers race too: each Reload applies whichever file is there.
				e.writeNamed(t, fmt.Sprintf(".rules-%d.tmp", w), body)
				if err := rl.Reload(context.Background()); err != nil {
					t.Errorf("Reload: %v", err)
					return
				}
				reloads.Add(1)
			}
		})
	}
	rwg.Wait()
	during := ok.Load() - n0
	t.Logf("%d reloads in %v, %d requests meanwhile", reloads.Load(), time.Since(start), during)
	n := ok.Load()
	testutil.WaitFor(t, func() bool { return ok.Load() > n }, "a request after the last reload")
	close(stop)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests to a rule both configs hold failed; first: %v", failed.Load(), failed.Load()+ok.Load(), <-errs)
	}
	if during == 0 {
		t.Fatal("no request went through while the reloads ran")
	}
	if got, want := scrapeMetric(t, s.admin, `credproxy_config_reloads_total{result="ok"}`), fmt.Sprint(reloads.Load()); got != want {
		t.Errorf("reloads ok = %q, want %s", got, want)
	}
	if n := strings.Count(s.audit.String(), `"event":"lease.created","lease_id":"`); n != 1 {
		t.Errorf("%d leases created for %d requests across %d reloads, want 1:\n%s", n, ok.Load(), reloads.Load(), s.audit.String())
	}
}

// writeNamed is write through a temporary file of its own, for concurrent
// writers.
func (e *reloadEnv) writeNamed(t *testing.T, tmpName, body string) {
	t.Helper()
	if e.cfg == "" {
		e.cfg = filepath.Join(e.dir, "rules.yaml")
	}
	tmp := filepath.Join(e.dir, tmpName)
	if err := os.WriteFile(tmp, []byte(e.configText(body)), 0o600); err != nil {
		t.Error(err)
		return
	}
	if err := os.Rename(tmp, e.cfg); err != nil {
		t.Error(err)
	}
}

// Hostile: a tunnel intercepted under the old rules is matched on the new
// ones request by request, so a credential taken off a host stops going
// there at once, even on a connection opened before the reload.
func TestReloadStopsInjectingInATunnelOpenedBefore(t *testing.T) {
	e := newReloadEnv(t)
	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{A}}", "key"))
	s, rl, _ := e.start(t)
	c := e.client(t, s.proxy)
	c.Transport.(*http.Transport).MaxConnsPerHost = 1
	var conns atomic.Int64
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conns.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	if code, _ := get(t, c, e.a.URL+"/x"); code != 200 {
		t.Fatalf("a before the reload: %d", code)
	}
	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{B}}", "key"))
	if err := rl.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, c, e.a.URL+"/x"); code != http.StatusUnauthorized || e.lastAuth("a") != "" {
		t.Errorf("a after the reload, same tunnel: %d, Authorization %q; want no credential (401)", code, e.lastAuth("a"))
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the agent opened %d connections to the proxy, want 1: the second request must reuse the tunnel", n)
	}
}

// A real Vault: removing a dynamic database credential by reload revokes
// its Vault lease (the PostgreSQL role is dropped), audited config_changed;
// the KV credential on the same source keeps its lease and its client.
func TestVaultReloadRevokesARemovedDynamicCredential(t *testing.T) {
	clock := leasetest.NewClock(time.Now()) // no lease ends by time here
	var rl *Reloader
	e := newVaultEnvOn(t, vaulttest.Start(t), "readonly", "1m", "", serveOptions{Clock: clock, Reloader: func(r *Reloader) { rl = r }})
	e.vs.EnablePostgres(t, "readonly", time.Minute, time.Hour)
	prefix := e.vs.PGUserPrefix("readonly")
	for _, p := range []string{"/reports/q1", "/v1/chat"} {
		if code, body := e.get(t, p); code != 200 {
			t.Fatalf("%s before the reload: %d %q", p, code, body)
		}
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 1 {
		t.Fatalf("%d PostgreSQL roles before the reload, want 1", n)
	}
	before := leaseIDs(t, e.served)

	cfgFile := filepath.Join(e.dir, "rules.yaml")
	text := fmt.Sprintf(vaultRules, e.vs.Addr, hostOf(e.up), "readonly", "1m")
	// Drop the reports credential and its rule.
	text = regexp.MustCompile(`(?m)^  reports: .*\n`).ReplaceAllString(text, "")
	text = text[:strings.Index(text, "  - name: reports")] + text[strings.Index(text, "  - name: openai"):]
	if err := os.WriteFile(cfgFile, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rl.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if n := vaulttest.PGRoleCount(t, prefix); n != 0 {
		t.Errorf("%d PostgreSQL roles after the credential was removed, want 0 (its Vault lease revoked)", n)
	}
	revoked := regexp.MustCompile(`"event":"lease.revoked"[^\n]*`).FindAllString(e.audit.String(), -1)
	if len(revoked) != 1 || !strings.Contains(revoked[0], `"credential":"reports"`) || !strings.Contains(revoked[0], `"reason":"config_changed"`) ||
		!strings.Contains(revoked[0], `"source_lease_id":"database/creds/readonly/`) {
		t.Errorf("revocations: %q; want reports' Vault lease, reason config_changed", revoked)
	}
	if code, _ := e.get(t, "/v1/chat"); code != 200 {
		t.Errorf("the kept KV credential after the reload: %d, want 200 (its Vault client still open)", code)
	}
	if after := leaseIDs(t, e.served); after["openai"] != before["openai"] || after["reports"] != "" {
		t.Errorf("leases %v after the reload (before %v): want openai's kept and none for reports", after, before)
	}
}
