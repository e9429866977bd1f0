package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestExecPassesTheEnvAndHidesCredentials(t *testing.T) {
	f := newAgentFixture(t, "127.0.0.1:3128")
	t.Setenv("NODE_OPTIONS", "--max-old-space-size=100")
	t.Setenv("SSL_CERT_DIR", "/etc/ssl/certs")
	t.Setenv("CREDPROXY_EXEC_KEEP", "kept")
	code, out := runCmd(t, "exec", "--config", f.cfg, "--", "sh", "-c",
		`printf '%s\n' "$OPENAI_API_KEY" "$HTTPS_PROXY" "$NODE_OPTIONS" "${SSL_CERT_DIR-unset}" "$CREDPROXY_EXEC_KEEP" "$SSL_CERT_FILE"`)
	if code != 0 {
		t.Fatalf("exec exited %d", code)
	}
	want := []string{placeholder, "http://127.0.0.1:3128",
		"--max-old-space-size=100 --import file://", "unset", "kept", filepath.Join(f.dir, bundleName)}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("child printed %q, want %d lines", out, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start with %q", i, lines[i], w)
		}
	}
	if strings.Contains(out, testKey) {
		t.Error("the child saw the real OPENAI_API_KEY")
	}
}

func TestExecReturnsTheChildsExitCode(t *testing.T) {
	f := newAgentFixture(t, "127.0.0.1:3128")
	for _, c := range []struct {
		script string
		want   int
	}{{"exit 0", 0}, {"exit 3", 3}, {"kill -KILL $$", 128 + 9}} {
		if code, _ := runCmd(t, "exec", "--config", f.cfg, "--", "sh", "-c", c.script); code != c.want {
			t.Errorf("sh -c %q: exec exited %d, want %d", c.script, code, c.want)
		}
	}
	if code, _ := runCmd(t, "exec", "--config", f.cfg, "--", "credproxy-no-such-command"); code != 127 {
		t.Errorf("a missing command: exec exited %d, want 127", code)
	}
	if code, _ := runCmd(t, "exec", "--config", f.cfg); code != 2 {
		t.Errorf("no command: exec exited %d, want 2", code)
	}
}

// TestExecForwardsSIGTERM runs this test binary as credproxy, sends it
// SIGTERM once the child says it is ready, and expects the child's trap to
// run and its exit code to come back.
func TestExecForwardsSIGTERM(t *testing.T) {
	f := newAgentFixture(t, "127.0.0.1:3128")
	cmd := exec.Command(os.Args[0], "exec", "--config", f.cfg, "--", "sh", "-c",
		`trap 'kill $p; echo got-term; exit 7' TERM; sleep 1000 & p=$!; echo ready; wait $p`)
	cmd.Env = append(os.Environ(), "CREDPROXY_TEST_MAIN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); line != "ready\n" {
		cmd.Process.Kill()
		t.Fatalf("child's first line %q (%v), want ready; stderr:\n%s", line, err, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := r.ReadString('\n')
	_ = cmd.Wait()
	if rest != "got-term\n" || cmd.ProcessState.ExitCode() != 7 {
		t.Errorf("after SIGTERM: child printed %q and credproxy exited %d; want got-term and 7 (stderr:\n%s)",
			rest, cmd.ProcessState.ExitCode(), stderr.String())
	}
}

func TestExecWithProxyRunsCurlThroughIt(t *testing.T) {
	f := newAgentFixture(t, "127.0.0.1:0")
	code, out := runCmd(t, "exec", "--config", f.cfg, "--with-proxy", "--", "sh", "-c",
		`curl -sS --fail-with-body https://api.example.test/v1/models && echo && curl -sS --fail-with-body https://tunnelled.example.test/`)
	if code != 0 || out != "hello from api.example.test\nhello from tunnelled.example.test" {
		t.Fatalf("exec --with-proxy curl: exit %d, output %q", code, out)
	}
	if got := f.api.seen(); len(got) != 1 || got[0] != "Bearer "+testKey {
		t.Errorf("upstream saw Authorization %q, want the injected key once", got)
	}
}

func TestExecWithProxyThatFailsDoesNotStartTheChild(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	f := newAgentFixture(t, busy.Addr().String())
	marker := filepath.Join(t.TempDir(), "ran")
	if code, _ := runCmd(t, "exec", "--config", f.cfg, "--with-proxy", "--", "touch", marker); code != 1 {
		t.Errorf("exec with a proxy that cannot listen exited %d, want 1", code)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the child ran although the proxy did not start")
	}
}

// TestNodeFetchGoesThroughThePreload installs the embedded lock's undici with
// npm ci and runs Node's built-in fetch with only the agent environment: the
// upstream must see the injected key, so the request went through credproxy.
func TestNodeFetchGoesThroughThePreload(t *testing.T) {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed for the Node preload test: %v", tool, err)
		}
	}
	f := newAgentFixture(t, "127.0.0.1:0")
	cfg := mustLoad(t, f.cfg)
	s := startServe(t, cfg)
	e, err := buildAgentEnv(cfg, s.proxy, s.admin, nil)
	if err != nil {
		t.Fatal(err)
	}
	node := func(script string) (string, string, error) {
		cmd := exec.Command("node", "-e", script)
		cmd.Env = childEnv([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, e, nil)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	// Without undici the preload says so once and the agent still runs.
	out, stderr, err := node(`console.log("ran")`)
	if err != nil || out != "ran\n" || strings.Count(stderr, "credproxy preload:") != 1 {
		t.Fatalf("node without undici: %v, stdout %q, stderr %q; want it to run and warn once", err, out, stderr)
	}
	var npmOut bytes.Buffer
	if err := installNode(e.node, &npmOut); err != nil {
		t.Fatalf("%v\n%s", err, npmOut.String())
	}
	out, stderr, err = node(`fetch("https://api.example.test/v1/models").then(r => r.text()).then(console.log)`)
	if err != nil || out != "hello from api.example.test\n" || stderr != "" {
		t.Fatalf("node fetch through the preload: %v, stdout %q, stderr %q", err, out, stderr)
	}
	if got := f.api.seen(); len(got) != 1 || got[0] != "Bearer "+testKey {
		t.Errorf("upstream saw Authorization %q, want the injected key: fetch did not go through credproxy", got)
	}
	var env bytes.Buffer
	if code := runMain(context.Background(), []string{"env", "--config", f.cfg}, &env, &bytes.Buffer{}); code != 0 || strings.Contains(env.String(), "--install-node") {
		t.Errorf("env after the install: exit %d, still tells to install:\n%s", code, env.String())
	}
}

// TestClientTokenInTheProxyURL: with clients configured, --client NAME puts
// the name and token in the proxy URLs and the proxy lets that agent in.
func TestClientTokenInTheProxyURL(t *testing.T) {
	f := newAgentFixture(t, "127.0.0.1:0")
	const token = "client-token-0123456789abcdef"
	t.Setenv("CREDPROXY_TEST_CLIENT_TOKEN", token)
	text, _ := os.ReadFile(f.cfg)
	writeFile(t, f.cfg, string(text)+"clients: [{name: alice, tokenEnv: CREDPROXY_TEST_CLIENT_TOKEN}]\n")
	_, out := runCmd(t, "env", "--config", f.cfg, "--client", "alice")
	if !strings.Contains(out, "export HTTPS_PROXY=http://alice:"+token+"@127.0.0.1:0\n") {
		t.Errorf("env --client alice: no proxy URL with alice's token:\n%s", out)
	}
	if code, _ := runCmd(t, "env", "--config", f.cfg, "--client", "bob"); code != 1 {
		t.Errorf("env --client bob (no such client) exited %d, want 1", code)
	}
	code, out := runCmd(t, "exec", "--config", f.cfg, "--with-proxy", "--client", "alice", "--",
		"curl", "-sS", "--fail-with-body", "https://api.example.test/v1/models")
	if code != 0 || out != "hello from api.example.test" {
		t.Errorf("exec --with-proxy --client alice curl: exit %d, output %q", code, out)
	}
}
