// Package hostile drives a real credproxy process the way a prompt-injected
// agent and a hostile upstream would: raw sockets, curl, Python requests and
// Go clients against loopback TLS upstreams. Every byte a client received
// and everything the process wrote is scanned for the test secrets, raw and
// encoded, when each process stops.
package hostile

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Test secrets. The query key holds characters that percent-encoding
// changes, so its URL-encoded form differs from the raw one.
const (
	keyValue   = "sk-test-hostile-4f9a1c7e2b8d6053aa91"
	basicValue = "sk-test-hostile-basic-77c2e0f41d9b"
	queryValue = "sk-test-hostile-q+7/Zr=9&x:1"
	adminToken = "admintok-test-hostile-3c1e9b7a55d2"
)

var (
	binPath    string // the credproxy binary TestMain built
	upstreamCA *testCA
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "credproxy-hostile-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	binPath = filepath.Join(dir, "credproxy")
	build := exec.Command("go", "build", "-o", binPath, "./cmd/credproxy")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "hostile: go build ./cmd/credproxy: %v\n%s", err, out)
		return 1
	}
	if upstreamCA, err = newTestCA(dir); err != nil {
		fmt.Fprintln(os.Stderr, "hostile: upstream CA:", err)
		return 1
	}
	return m.Run()
}

// procOpts describes one credproxy process. YAML is appended to a base
// config (listen and admin on :0, the admin token file, the CA in the temp
// dir, and upstream.caFiles unless YAML has its own `upstream:`); {{DIR}}
// and {{UPCA}} are replaced.
type procOpts struct {
	YAML    string
	Env     map[string]string // the child's secrets; every value is scanned for
	Secrets []string          // more values to scan for (a store token)
	Pprof   bool
}

// proc is a running credproxy process and everything captured from it.
type proc struct {
	t                    *testing.T
	dir                  string
	cmd                  *exec.Cmd
	stdout, stderr       *syncBuf
	proxyAddr, adminAddr string
	caFile               string
	secrets              []string
	exited               chan struct{}
	poolOnce             sync.Once
	pool                 *x509.CertPool
	waitErr              error

	mu       sync.Mutex
	received []capture   // bytes clients and admin calls received
	byKey    map[any]int // index in received of a connection's capture
}

type capture struct {
	where string
	data  []byte
}

// startProc writes the config and starts credproxy; the cleanup stops it
// and runs the checks every process gets (exit 0, a revoke for every
// lease, no secret anywhere).
func startProc(t *testing.T, o procOpts) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{t: t, dir: dir, stdout: &syncBuf{}, stderr: &syncBuf{}, exited: make(chan struct{}),
		secrets: append([]string{adminToken}, o.Secrets...)}
	for _, v := range o.Env {
		p.secrets = append(p.secrets, v)
	}
	p.secrets = append(p.secrets, "agent:"+basicValue)
	p.caFile = filepath.Join(dir, "ca.pem")
	writeFile(t, filepath.Join(dir, "admin-token"), adminToken+"\n")
	base := fmt.Sprintf("listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0, tokenFile: %s}\nidentity: hostile-agent\nca: {cert: %s, key: %s}\n",
		filepath.Join(dir, "admin-token"), p.caFile, filepath.Join(dir, "ca-key.pem"))
	if !strings.Contains(o.YAML, "\nupstream:") && !strings.HasPrefix(o.YAML, "upstream:") {
		base += "upstream: {caFiles: [{{UPCA}}]}\n"
	}
	cfg := strings.NewReplacer("{{DIR}}", dir, "{{UPCA}}", upstreamCA.certFile).Replace(base + o.YAML)
	cfgFile := filepath.Join(dir, "credproxy.yaml")
	writeFile(t, cfgFile, cfg)
	args := []string{"run", "--config", cfgFile, "--log-format", "json", "--log-level", "debug"}
	if o.Pprof {
		args = append(args, "--pprof")
	}
	p.cmd = exec.Command(binPath, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Env = childEnv(o.Env)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start credproxy: %v", err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.finish)
	p.waitStarted(cfg)
	return p
}

func childEnv(secrets map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "VAULT_ADDR", "VAULT_TOKEN":
			continue
		}
		env = append(env, kv)
	}
	for k, v := range secrets {
		env = append(env, k+"="+v)
	}
	return env
}

// waitStarted parses the "credproxy started" log line for the bound
// addresses.
func (p *proc) waitStarted(cfg string) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			var rec struct{ Msg, Listen, Admin string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "credproxy started" && rec.Listen != "" {
				p.proxyAddr, p.adminAddr = rec.Listen, rec.Admin
				return
			}
		}
		select {
		case <-p.exited:
			p.t.Fatalf("credproxy exited before starting (%v); expected a \"credproxy started\" log line.\nconfig:\n%s\nstderr:\n%s",
				p.waitErr, cfg, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("credproxy logged no \"credproxy started\" line within 30s; stderr:\n%s", p.stderr.String())
}

// record keeps bytes a client received for the final secret scan.
func (p *proc) record(where string, b []byte) { p.recordAs(nil, where, b) }

// recordAs replaces the capture made earlier under the same non-nil key:
// a connection's bytes so far.
func (p *proc) recordAs(key any, where string, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := capture{where, append([]byte(nil), b...)}
	if i, ok := p.byKey[key]; ok && key != nil {
		p.received[i] = c
		return
	}
	if key != nil {
		if p.byKey == nil {
			p.byKey = map[any]int{}
		}
		p.byKey[key] = len(p.received)
	}
	p.received = append(p.received, c)
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// finish fetches /metrics and /leases, stops the process with SIGTERM and
// checks the exit status, the audit trail and every capture for secrets.
func (p *proc) finish() {
	t := p.t
	select {
	case <-p.exited:
		t.Errorf("credproxy exited before the test ended (%v); expected it to keep running.\nstderr tail:\n%s", p.waitErr, tail(p.stderr.String(), 3000))
	default:
		for _, path := range []string{"/metrics", "/leases"} {
			if status, body, err := p.admin("GET", path, true); err == nil {
				p.record("admin "+path+" "+strconv.Itoa(status), body)
			}
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(40 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("credproxy did not exit within 40s of SIGTERM; expected a drained, clean exit")
		}
		if p.waitErr != nil {
			t.Errorf("credproxy exit after SIGTERM: %v; expected status 0.\nstderr tail:\n%s", p.waitErr, tail(p.stderr.String(), 3000))
		}
		p.checkRevoked()
	}
	p.scanAll()
}

// checkRevoked wants a lease.revoked event for every lease.created one.
func (p *proc) checkRevoked() {
	created, revoked := map[string]bool{}, map[string]bool{}
	for _, ev := range auditEvents(p.stdout.String()) {
		switch ev["event"] {
		case "lease.created":
			created[fmt.Sprint(ev["lease_id"])] = true
		case "lease.revoked":
			revoked[fmt.Sprint(ev["lease_id"])] = true
		}
	}
	for id := range created {
		if !revoked[id] {
			p.t.Errorf("lease %s was created but never revoked at shutdown; expected a lease.revoked audit event for it", id)
		}
	}
}

// auditEvents decodes the JSON audit lines on stdout.
func auditEvents(out string) []map[string]any {
	var evs []map[string]any
	for _, line := range strings.Split(out, "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) == nil && ev["event"] != nil {
			evs = append(evs, ev)
		}
	}
	return evs
}

func (p *proc) scanAll() {
	hay := []capture{{"stdout (audit)", []byte(p.stdout.String())}, {"stderr (logs)", []byte(p.stderr.String())}}
	p.mu.Lock()
	hay = append(hay, p.received...)
	p.mu.Unlock()
	for _, h := range hay {
		for _, s := range p.secrets {
			if form, i := findSecret(h.data, s); i >= 0 {
				p.t.Errorf("secret leaked in %s as %s form: %q; expected no form of any secret", h.where, form, excerpt(h.data, i))
				break
			}
		}
	}
}

// admin calls the admin listener directly, with or without the token.
func (p *proc) admin(method, path string, token bool) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://"+p.adminAddr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if token {
		req.Header.Set("Authorization", "Bearer "+adminToken)
	}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func excerpt(b []byte, i int) string {
	lo, hi := max(0, i-60), min(len(b), i+100)
	return string(b[lo:hi])
}

// jsonErrorBody checks a credproxy refusal body: JSON with an "error".
func jsonErrorBody(t *testing.T, what string, body []byte) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Errorf("%s: expected a JSON body {\"error\": ...} saying why; got %q", what, trunc(body))
	}
	return e.Error
}

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// readHead reads a response head and its body by framing, or what there is.
func readHead(br *bufio.Reader) (*http.Response, []byte, error) {
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != 101 {
			continue
		}
		if resp.StatusCode == 101 {
			return resp, nil, nil
		}
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}
}

// portOf returns the port of a host:port.
func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
