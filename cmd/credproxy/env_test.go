package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// publicPKI stands in for the public web PKI: a root, written to a file that
// the test process's SSL_CERT_FILE names (the "system roots" the bundle
// copies), and TLS upstreams on 127.0.0.1 with leaves it signs.
type publicPKI struct {
	rootFile string
	root     *x509.Certificate
	key      *ecdsa.PrivateKey
}

func newPublicPKI(t *testing.T, dir string) *publicPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test public root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	p := &publicPKI{rootFile: filepath.Join(dir, "public-root.pem"), root: root, key: key}
	if err := os.WriteFile(p.rootFile, pemCert(der), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", p.rootFile)
	t.Setenv("SSL_CERT_DIR", "")
	return p
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// upstream is an HTTPS server for name whose leaf the public root signs; it
// records the Authorization header of each request.
type upstream struct {
	srv   *httptest.Server
	mu    sync.Mutex
	auths []string
}

func (p *publicPKI) upstream(t *testing.T, name string) *upstream {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.root, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.auths = append(u.auths, r.Header.Get("Authorization"))
		u.mu.Unlock()
		io.WriteString(w, "hello from "+name)
	}))
	u.srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	u.srv.StartTLS()
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auths...)
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.srv.URL, "https://") }

// agentFixture is a config in a directory whose name holds a space and a
// quote, with one intercepted host (api.example.test, credential from
// OPENAI_API_KEY) and one tunnelled host (tunnelled.example.test), both sent
// to local upstreams by upstream.connectTo.
type agentFixture struct {
	dir, cfg       string
	pki            *publicPKI
	api, tunnelled *upstream
}

func newAgentFixture(t *testing.T, listen string) *agentFixture {
	t.Helper()
	f := &agentFixture{dir: filepath.Join(t.TempDir(), `agent dir'q`)}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f.pki = newPublicPKI(t, f.dir)
	f.api = f.pki.upstream(t, "api.example.test")
	f.tunnelled = f.pki.upstream(t, "tunnelled.example.test")
	f.cfg = filepath.Join(f.dir, "rules.yaml")
	writeFile(t, f.cfg, `
listen: `+listen+`
admin: 127.0.0.1:0
identity: test-agent
unmatched: tunnel
upstream:
  caFiles: [public-root.pem]
  connectTo: {"api.example.test:443": "`+f.api.addr()+`", "tunnelled.example.test:443": "`+f.tunnelled.addr()+`"}
credentials:
  openai: {source: env, env: OPENAI_API_KEY}
rules:
  - name: api
    hosts: [api.example.test]
    credential: openai
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`)
	t.Setenv("OPENAI_API_KEY", testKey)
	return f
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runCmd runs credproxy's runMain and returns its exit code and stdout;
// stderr goes to the test log on failure.
func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runMain(context.Background(), args, &out, &errb)
	if code != 0 {
		t.Logf("credproxy %s: exit %d, stderr:\n%s", strings.Join(args, " "), code, errb.String())
	}
	return code, out.String()
}

// shellEnv runs script in bash, with arg as $0, in an empty environment
// (PATH aside, and an SSL_CERT_DIR to unset) and returns the environment
// it ends with.
func shellEnv(t *testing.T, script, arg string) map[string]string {
	t.Helper()
	cmd := exec.Command("bash", "-c", script+"\nenv -0", arg)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SSL_CERT_DIR=/should/be/unset"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash (is it installed?): %v\nscript:\n%s", err, script)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

func TestEnvFormatsQuoteAndAgree(t *testing.T) {
	f := newAgentFixture(t, "127.0.0.1:3128")
	code, sh := runCmd(t, "env", "--config", f.cfg)
	if code != 0 {
		t.Fatalf("env exited %d", code)
	}
	got := shellEnv(t, `eval "$0"`, sh)
	bundle := filepath.Join(f.dir, bundleName)
	want := map[string]string{
		"HTTPS_PROXY": "http://127.0.0.1:3128", "http_proxy": "http://127.0.0.1:3128",
		"NO_PROXY": "localhost,127.0.0.1,::1", "SSL_CERT_FILE": bundle, "REQUESTS_CA_BUNDLE": bundle,
		"CURL_CA_BUNDLE": bundle, "GIT_SSL_CAINFO": bundle, "AWS_CA_BUNDLE": bundle,
		"NODE_EXTRA_CA_CERTS": filepath.Join(f.dir, "credproxy-ca.pem"), "NODE_USE_ENV_PROXY": "1",
		"NODE_OPTIONS": "--import " + (&url.URL{Scheme: "file", Path: filepath.Join(f.dir, nodeDirName, "preload.mjs")}).String(),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("sh output, evaluated by bash: %s = %q, want %q", k, got[k], v)
		}
	}
	if v, ok := got["SSL_CERT_DIR"]; ok {
		t.Errorf("sh output left SSL_CERT_DIR=%q set, want it unset", v)
	}

	_, js := runCmd(t, "env", "--config", f.cfg, "--format", "json")
	var j struct {
		Set   map[string]string `json:"set"`
		Unset []string          `json:"unset"`
	}
	if err := json.Unmarshal([]byte(js), &j); err != nil {
		t.Fatalf("json output: %v\n%s", err, js)
	}
	for k, v := range want {
		if j.Set[k] != v {
			t.Errorf("json: %s = %q, want %q", k, j.Set[k], v)
		}
	}
	if len(j.Unset) != 1 || j.Unset[0] != "SSL_CERT_DIR" {
		t.Errorf("json unset = %v, want [SSL_CERT_DIR]", j.Unset)
	}

	_, dotenv := runCmd(t, "env", "--config", f.cfg, "--format", "dotenv")
	dotFile := filepath.Join(t.TempDir(), "agent.env")
	writeFile(t, dotFile, dotenv)
	got = shellEnv(t, `set -a; . "$0"; set +a`, dotFile)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("dotenv, sourced by bash: %s = %q, want %q", k, got[k], v)
		}
	}
	if strings.Contains(dotenv, "SSL_CERT_DIR") {
		t.Errorf("dotenv mentions SSL_CERT_DIR (it cannot unset, so it should leave it out):\n%s", dotenv)
	}

	_, fish := runCmd(t, "env", "--config", f.cfg, "--shell", "fish")
	if wantLine := "set -gx SSL_CERT_FILE '" + strings.ReplaceAll(bundle, "'", `\'`) + "'\n"; !strings.Contains(fish, wantLine) {
		t.Errorf("fish output lacks %q:\n%s", wantLine, fish)
	}
	if !strings.Contains(fish, "set -e SSL_CERT_DIR\n") {
		t.Errorf("fish output does not erase SSL_CERT_DIR:\n%s", fish)
	}
}

func TestNoProxyKeepsHostsThatRulesName(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "rules.yaml")
	writeFile(t, cfgFile, `
admin: 10.1.2.3:9464
credentials: {k: {source: env, env: CREDPROXY_NOPROXY_KEY}}
rules:
  - {name: local, hosts: ["127.0.0.1:8080"], credential: k, allowPlaintext: true, inject: {header: X-Key, value: "{{ .Value }}"}}
`)
	got := strings.Join(noProxyHosts(mustLoad(t, cfgFile), "10.1.2.3:9464"), ",")
	if got != "localhost,::1,10.1.2.3" {
		t.Errorf("NO_PROXY = %q, want localhost,::1,10.1.2.3 (127.0.0.1 has a rule, so the proxy must see it)", got)
	}
}

func TestBundleHoldsSystemRootsAndFollowsTheCA(t *testing.T) {
	f := newAgentFixture(t, "127.0.0.1:3128")
	if code, _ := runCmd(t, "env", "--config", f.cfg); code != 0 {
		t.Fatal("env failed")
	}
	bundle := filepath.Join(f.dir, bundleName)
	caFile := filepath.Join(f.dir, "credproxy-ca.pem")
	check := func(when string) {
		t.Helper()
		data, err := os.ReadFile(bundle)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		ca, _ := os.ReadFile(caFile)
		root, _ := os.ReadFile(f.pki.rootFile)
		if !bytes.Contains(data, root) || !bytes.Contains(data, ca) {
			t.Errorf("%s: the bundle should hold the system root (SSL_CERT_FILE) and credproxy's CA:\n%s", when, data)
		}
		if fi, _ := os.Stat(bundle); fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: bundle mode %v, want 0644", when, fi.Mode().Perm())
		}
	}
	check("first run")
	oldCA, _ := os.ReadFile(caFile)
	os.Remove(caFile)
	os.Remove(filepath.Join(f.dir, "credproxy-ca-key.pem"))
	if code, _ := runCmd(t, "env", "--config", f.cfg); code != 0 {
		t.Fatal("env failed")
	}
	check("after a new CA")
	if data, _ := os.ReadFile(bundle); bytes.Contains(data, oldCA) {
		t.Error("the bundle still holds the old CA after the CA changed")
	}
}

// TestCurlWithOnlyTheEnvReachesInterceptedAndTunnelledHosts is the bug the
// bundle fixes: with the CA alone in CURL_CA_BUNDLE, curl could not verify
// a tunnelled host's real certificate.
func TestCurlWithOnlyTheEnvReachesInterceptedAndTunnelledHosts(t *testing.T) {
	f := newAgentFixture(t, "127.0.0.1:0")
	cfg := mustLoad(t, f.cfg)
	s := startServe(t, cfg)
	e, err := buildAgentEnv(cfg, s.proxy, s.admin, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sh strings.Builder
	if err := writeEnv(&sh, "sh", e); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"https://api.example.test/v1/models", "https://tunnelled.example.test/"} {
		cmd := exec.Command("bash", "-c", sh.String()+`curl -sS --fail-with-body "$0"`, u)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("curl %s with only the env: %v\n%s", u, err, out)
		}
	}
	if got := f.api.seen(); len(got) != 1 || got[0] != "Bearer "+testKey {
		t.Errorf("intercepted upstream saw Authorization %q, want the injected key once", got)
	}
	if got := f.tunnelled.seen(); len(got) != 1 || got[0] != "" {
		t.Errorf("tunnelled upstream saw Authorization %q, want one request without it", got)
	}
}

func TestBannerPrintsTheEnv(t *testing.T) {
	f := newAgentFixture(t, "127.0.0.1:3128")
	cfg := mustLoad(t, f.cfg)
	var b strings.Builder
	printBanner(&b, cfg, "127.0.0.1:4000", "127.0.0.1:4001")
	for _, want := range []string{"export HTTPS_PROXY=http://127.0.0.1:4000\n", "export SSL_CERT_FILE=" + shQuote(filepath.Join(f.dir, bundleName)) + "\n", "unset SSL_CERT_DIR\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}
}
