package main

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
)

// runProcess runs credproxy as a real process on the env's config with
// extra flags; it returns the proxy and admin addresses, its log and its pid.
func (e *reloadEnv) runProcess(t *testing.T, flags ...string) (proxyAddr, adminAddr string, logs *testutil.SyncBuffer, pid int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"run", "--config", e.cfg}, flags...)...)
	cmd.Env = append(os.Environ(), "CREDPROXY_TEST_MAIN=1")
	cmd.Stdout = io.Discard
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
	})
	logs = &testutil.SyncBuffer{}
	sc := bufio.NewScanner(stderr)
	started := regexp.MustCompile(`"msg":"credproxy started".*"listen":"([^"]+)","admin":"([^"]+)"`)
	for sc.Scan() {
		logs.Write([]byte(sc.Text() + "\n"))
		if m := started.FindStringSubmatch(sc.Text()); m != nil {
			proxyAddr, adminAddr = m[1], m[2]
			break
		}
	}
	if proxyAddr == "" {
		t.Fatalf("credproxy never logged its addresses:\n%s", logs.String())
	}
	go func() {
		for sc.Scan() {
			logs.Write([]byte(sc.Text() + "\n"))
		}
	}()
	return proxyAddr, adminAddr, logs, cmd.Process.Pid
}

// reloadedTo waits until a request to up is injected: the rule moved there.
// Each try opens a new tunnel: one kept alive from before keeps what its
// CONNECT decided (passed through untouched).
func reloadedTo(t *testing.T, c *http.Client, up *httptest.Server, what string) {
	t.Helper()
	testutil.WaitFor(t, func() bool {
		c.CloseIdleConnections()
		resp, err := c.Get(up.URL + "/x")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, what)
}

// SIGHUP, sent to a real credproxy process, reloads its config.
func TestSIGHUPReloadsTheConfig(t *testing.T) {
	e := newReloadEnv(t)
	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{A}}", "key"))
	proxyAddr, adminAddr, logs, pid := e.runProcess(t)
	c := e.client(t, proxyAddr)
	if code, _ := get(t, c, e.b.URL+"/x"); code != http.StatusUnauthorized {
		t.Fatalf("b before the reload: %d, want 401 (no rule)", code)
	}
	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{B}}", "key"))
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, func() bool { return strings.Contains(logs.String(), `"msg":"config reloaded"`) }, "a config reloaded log line")
	// The tunnel to b kept alive from before the reload was passed through
	// untouched, and stays so: a new connection is intercepted.
	c.CloseIdleConnections()
	if code, body := get(t, c, e.b.URL+"/x"); code != 200 || body != "ok b" {
		t.Errorf("b after SIGHUP: %d %q, want the credential injected", code, body)
	}
	if got := scrapeMetric(t, adminAddr, `credproxy_config_reloads_total{result="ok"}`); got != "1" {
		t.Errorf("reloads ok = %q, want 1", got)
	}
}

// --watch-config sees a new file renamed over the config.
func TestWatchConfigSeesAnAtomicRename(t *testing.T) {
	e := newReloadEnv(t)
	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{A}}", "key"))
	proxyAddr, adminAddr, logs, _ := e.runProcess(t, "--watch-config")
	testutil.WaitFor(t, func() bool { return strings.Contains(logs.String(), "watching the config for changes") }, "the watcher to start")
	c := e.client(t, proxyAddr)
	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{B}}", "key"))
	reloadedTo(t, c, e.b, "the rule to move to b after the file was replaced")
	if got := scrapeMetric(t, adminAddr, `credproxy_config_reloads_total{result="ok"}`); got != "1" {
		t.Errorf("reloads ok = %q, want 1:\n%s", got, logs.String())
	}
	// A broken replacement is refused, logged with its line; the rule stays.
	e.write(t, "leases: {idleTimeout: soon}\n"+keyOnly+"rules:\n"+ruleFor("up", "{{B}}", "key"))
	testutil.WaitFor(t, func() bool {
		return scrapeMetric(t, adminAddr, `credproxy_config_reloads_total{result="error"}`) == "1"
	}, "the broken file to be refused")
	if !strings.Contains(logs.String(), e.cfg+":6: leases.idleTimeout") {
		t.Errorf("log does not name %s:6: leases.idleTimeout:\n%s", e.cfg, logs.String())
	}
	if code, _ := get(t, c, e.b.URL+"/x"); code != 200 {
		t.Errorf("b after a refused reload: %d, want 200", code)
	}
}

// --watch-config sees a Kubernetes ConfigMap update: the file is a symlink
// through ..data, and the update swaps ..data to a new directory.
func TestWatchConfigSeesAConfigMapSwap(t *testing.T) {
	e := newReloadEnv(t)
	e.cfg = filepath.Join(e.dir, "rules.yaml")
	version := func(name, body string) {
		if err := os.MkdirAll(filepath.Join(e.dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.dir, name, "rules.yaml"), []byte(e.configText(body)), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(e.dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(e.dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_12_03_v1", keyOnly+"rules:\n"+ruleFor("up", "{{A}}", "key"))
	if err := os.Symlink(filepath.Join("..data", "rules.yaml"), e.cfg); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	s := startServeWith(t, mustLoad(t, e.cfg), serveOptions{Log: slog.New(slog.NewJSONHandler(logs, nil)), WatchConfig: true})
	c := e.client(t, s.proxy)
	if code, _ := get(t, c, e.a.URL+"/x"); code != 200 {
		t.Fatalf("a before the swap: %d", code)
	}
	version("..2026_12_03_v2", keyOnly+"rules:\n"+ruleFor("up", "{{B}}", "key"))
	reloadedTo(t, c, e.b, "the rule to move to b after the ConfigMap swap")
	if got := scrapeMetric(t, s.admin, `credproxy_config_reloads_total{result="ok"}`); got != "1" {
		t.Errorf("reloads ok = %q, want 1:\n%s", got, logs.String())
	}
}

// POST /-/reload on the admin listener reloads the config: only with the
// admin token; a broken file is refused whole (422, its file and line in the
// problem's detail) and the config in force stays.
func TestAdminReloadRoute(t *testing.T) {
	e := newReloadEnv(t)
	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{A}}", "key"))
	s, _, logs := e.start(t)
	c := e.client(t, s.proxy)
	e.write(t, keyOnly+"rules:\n"+ruleFor("up", "{{B}}", "key"))
	for _, tok := range []string{"", "not-" + adminToken} {
		if code, body := s.adminRequest(t, "POST", "/-/reload", tok); code != http.StatusUnauthorized {
			t.Errorf("reload with token %q: %d %s, want 401", tok, code, body)
		}
	}
	if code, body := get(t, c, e.b.URL+"/x"); code != http.StatusUnauthorized {
		t.Fatalf("b before an authorized reload: %d %q, want 401 (no rule yet)", code, body)
	}
	if code, body := s.adminRequest(t, "POST", "/-/reload", adminToken); code != http.StatusOK {
		t.Fatalf("reload: %d %s, want 200", code, body)
	}
	c.CloseIdleConnections() // a tunnel from before keeps what its CONNECT decided
	if code, body := get(t, c, e.b.URL+"/x"); code != 200 || body != "ok b" {
		t.Errorf("b after the reload: %d %q, want the credential injected", code, body)
	}

	e.write(t, "leases: {idleTimeout: soon}\n"+keyOnly+"rules:\n"+ruleFor("up", "{{B}}", "key"))
	code, body := s.adminRequest(t, "POST", "/-/reload", adminToken)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "rules.yaml:6") || !strings.Contains(body, "idleTimeout") {
		t.Errorf("broken reload: %d %s, want 422 naming rules.yaml:6 (the first line after the head) and idleTimeout", code, body)
	}
	c.CloseIdleConnections()
	if code, body := get(t, c, e.b.URL+"/x"); code != 200 || body != "ok b" {
		t.Errorf("b after a refused reload: %d %q, want the config in force to stay", code, body)
	}
	if strings.Contains(body+logs.String(), testKey) {
		t.Error("a reload answer or log carries the key")
	}
}
