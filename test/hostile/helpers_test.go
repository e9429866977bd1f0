// Package hostile drives a real credproxy process the way a prompt-injected
// agent and a hostile upstream would: raw sockets, curl, Python requests and
// Go clients against loopback TLS upstreams. Every byte a client received
// and everything the process wrote is scanned for the test secrets, raw and
// encoded, when each process stops.
package hostile

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
	"github.com/credproxy/credproxy/internal/testutil"
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
	if binPath, err = proctest.Build(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
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
	child                *proctest.Proc
	stdout, stderr       *testutil.SyncBuffer
	proxyAddr, adminAddr string
	caFile               string
	secrets              []string
	poolOnce             sync.Once
	pool                 *x509.CertPool

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
	p := &proc{t: t, dir: dir, stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{},
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
	args := []string{"--log-format", "json", "--log-level", "debug"}
	if o.Pprof {
		args = append(args, "--pprof")
	}
	var err error
	p.child, err = proctest.Start(proctest.Options{Bin: binPath, Config: cfgFile, Args: args, Dir: dir,
		Env: childEnv(o.Env), Stdout: p.stdout, Stderr: p.stderr})
	if err != nil {
		p.scanAll()
		t.Fatalf("%v; expected a \"credproxy started\" log line.\nconfig:\n%s\nstderr:\n%s", err, cfg, p.stderr.String())
	}
	p.proxyAddr, p.adminAddr = p.child.ProxyAddr(), p.child.AdminAddr()
	t.Cleanup(p.finish)
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

// finish fetches /metrics and /leases, stops the process with SIGTERM and
// checks the exit status, the audit trail and every capture for secrets.
func (p *proc) finish() {
	t := p.t
	for _, path := range []string{"/metrics", "/leases"} {
		if status, body, err := p.admin("GET", path, true); err == nil {
			p.record("admin "+path+" "+strconv.Itoa(status), body)
		}
	}
	err := p.child.Stop(40 * time.Second)
	if errors.Is(err, proctest.ErrExited) {
		t.Errorf("%v; expected it to keep running until the test ended.\nstderr tail:\n%s", err, tail(p.stderr.String(), 3000))
	} else {
		if err != nil {
			t.Errorf("credproxy stop: %v; expected a drained exit with status 0 within 40s of SIGTERM.\nstderr tail:\n%s", err, tail(p.stderr.String(), 3000))
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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok := ""
	if token {
		tok = adminToken
	}
	return p.child.Admin(ctx, method, path, tok)
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

// jsonErrorBody checks a credproxy refusal with status code: an RFC 9457
// problem+json body whose type is a credproxy problem URN, with a title, the
// response's status, a detail, and an error member equal to the detail. hdr
// is nil when the client (curl) does not report headers. It returns the
// detail.
func jsonErrorBody(t *testing.T, what string, code int, hdr http.Header, body []byte) string {
	t.Helper()
	for k, want := range map[string]string{
		"Content-Type": "application/problem+json", "Cache-Control": "no-store", "X-Credproxy-Error": "1",
	} {
		if got := hdr.Get(k); hdr != nil && got != want {
			t.Errorf("%s: refusal header %s %q, expected %q", what, k, got, want)
		}
	}
	var p struct {
		Type, Title, Detail string
		Status              int
		Error               *string
	}
	if err := json.Unmarshal(body, &p); err != nil || !strings.HasPrefix(p.Type, "urn:credproxy:problem:") ||
		p.Title == "" || p.Status != code || p.Detail == "" || p.Error == nil || *p.Error != p.Detail {
		t.Errorf("%s: expected a problem+json body {\"type\": \"urn:credproxy:problem:…\", \"title\", \"status\": %d, \"detail\", \"error\" = detail}; got %q",
			what, code, trunc(body))
	}
	return p.Detail
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
