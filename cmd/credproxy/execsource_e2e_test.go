package main

import (
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/credproxy/credproxy/internal/testutil"
)

// execRules is the README's exec example, on test addresses: %[1]s is the
// upstream's host:port.
const execRules = `
listen: 127.0.0.1:0
admin: {listen: 127.0.0.1:0, tokenFile: admin-token}
identity: test-agent
upstream: {caFiles: [upstream.pem]}
sources:
  onepassword:
    type: exec
    command: [op, read, "op://agents/openai/credential"]
    timeout: 10s
    env: {OP_ACCOUNT: my.1password.com}
credentials:
  openai: {source: onepassword, ttl: 15m, idleTimeout: 10m}
rules:
  - name: openai
    hosts: ["%[1]s"]
    credential: openai
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

// execKey is what the stand-in `op` prints.
const execKey = "sk-test-op-0123456789abcdef"

// fakeOp is a stand-in for the 1Password CLI, which cannot run here: it
// checks its arguments and the configured OP_ACCOUNT, counts its runs, and
// prints execKey; while a file "broken" sits beside it, it prints the key
// on stdout and stderr and exits 1 (a helper failing noisily).
const fakeOp = `#!/bin/sh
dir=$(dirname "$0")
echo run >> "$dir/runs"
if [ "$1 $2" != "read op://agents/openai/credential" ] || [ "$OP_ACCOUNT" != my.1password.com ]; then
  echo "op: bad invocation" >&2; exit 2
fi
if [ -e "$dir/broken" ]; then
  echo ` + execKey + `
  echo "[ERROR] session expired for ` + execKey + `" >&2
  exit 1
fi
echo ` + execKey + `
`

// execEnv is credproxy with the README's exec source, the stand-in op on
// its PATH, in front of an HTTPS upstream that echoes the bearer it got.
type execEnv struct {
	bin     string // the directory holding op
	up      *httptest.Server
	seen    atomic.Value // string: the last Authorization the upstream saw
	logs    *testutil.SyncBuffer
	*served // credproxy
	client  *http.Client
}

func newExecEnv(t *testing.T) *execEnv {
	t.Helper()
	e := &execEnv{bin: t.TempDir(), logs: &testutil.SyncBuffer{}}
	if err := os.WriteFile(filepath.Join(e.bin, "op"), []byte(fakeOp), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", e.bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	e.up = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.seen.Store(r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") != "Bearer "+execKey {
			http.Error(w, "bad key", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok: you sent "+r.Header.Get("Authorization"))
	}))
	t.Cleanup(e.up.Close)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "upstream.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.up.Certificate().Raw}), 0o600)
	writeAdminToken(t, dir)
	cfgFile := filepath.Join(dir, "rules.yaml")
	os.WriteFile(cfgFile, fmt.Appendf(nil, execRules, strings.TrimPrefix(e.up.URL, "https://")), 0o600)
	cfg := mustLoad(t, cfgFile)
	e.served = startServeWith(t, cfg, serveOptions{Log: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	e.client = agent(t, e.proxy, cfg.CA.Cert)
	return e
}

func (e *execEnv) get(t *testing.T) (int, string) {
	t.Helper()
	return getAuth(t, e.client, e.up.URL+"/v1/models", "Bearer placeholder")
}

func (e *execEnv) runs(t *testing.T) int {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(e.bin, "runs"))
	return strings.Count(string(b), "\n")
}

// The upstream gets the key the helper printed, in place of the agent's
// placeholder; the agent never sees it (its echo is masked), nor do the
// logs or the audit trail. The helper runs once for several requests.
func TestExecCredentialThroughProxy(t *testing.T) {
	e := newExecEnv(t)
	for i := range 3 {
		code, body := e.get(t)
		if code != http.StatusOK || !strings.HasPrefix(body, "ok: you sent ") || e.seen.Load() != "Bearer "+execKey {
			t.Fatalf("request %d: %d %q; want 200 with the helper's key sent upstream\nlogs:\n%s", i, code, body, e.logs.String())
		}
		if strings.Contains(body, execKey) {
			t.Errorf("the agent saw the key in the echo: %q", body)
		}
	}
	if n := e.runs(t); n != 1 {
		t.Errorf("the helper ran %d times for 3 requests; want 1", n)
	}
	if got := testutil.AuditEvents(e.audit.String()); got != "lease.created" {
		t.Errorf("audit events %s; want lease.created", got)
	}
	notIn(t, execKey, map[string]string{"logs": e.logs.String(), "audit": e.audit.String()})
}

// A helper that fails: the agent gets a problem+json 502 naming the
// credential, with nothing the helper printed; the audit trail has the exit
// status; the log has the helper's stderr with the key masked. Once the
// helper works again (after the backoff), requests succeed.
func TestExecHelperFailingIs502(t *testing.T) {
	e := newExecEnv(t)
	broken := filepath.Join(e.bin, "broken")
	os.WriteFile(broken, nil, 0o600)
	code, body := e.get(t)
	if detail := credentialUnavailable(t, code, body); code != http.StatusBadGateway ||
		detail != `credential "openai": store onepassword unavailable` {
		t.Fatalf("with the helper failing: %d %s; want 502 naming the credential and its source", code, body)
	}
	audit, logs := e.audit.String(), e.logs.String()
	if !strings.Contains(audit, `"event":"lease.failed"`) || !strings.Contains(audit, "exec onepassword: helper exited with status 1") {
		t.Errorf("want a lease.failed with the exit status:\n%s", audit)
	}
	if !strings.Contains(logs, "[ERROR] session expired for [redacted]") {
		t.Errorf("want the helper's stderr in the log, masked:\n%s", logs)
	}
	if e.seen.Load() != nil {
		t.Errorf("the upstream was called (%v) though there was no credential", e.seen.Load())
	}
	notIn(t, execKey, map[string]string{"agent body": body, "logs": logs, "audit": audit})
	os.Remove(broken)
	testutil.WaitFor(t, func() bool { code, _ := e.get(t); return code == http.StatusOK }, "recovery once the helper works")
}

// notIn fails if secret appears in any of texts.
func notIn(t *testing.T, secret string, texts map[string]string) {
	t.Helper()
	for name, text := range texts {
		if strings.Contains(text, secret) {
			t.Errorf("%s carries the secret: %s", name, text)
		}
	}
}
