package clients

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Node 20's fetch ignores HTTPS_PROXY by itself: the preload in the
// NODE_OPTIONS `credproxy env` prints installs undici's EnvHttpProxyAgent.
// The scripts run with node --import loopback-only.mjs, so a client that
// went around the proxy fails instead of reaching for the real API.

func TestNodeFetch(t *testing.T) {
	testNode(t, "fetch.mjs", startOpenAI, checkOpenAIKey, "hello from the fake openai", "OPENAI_API_KEY="+placeholder)
}

func TestNodeOpenAISDK(t *testing.T) {
	testNode(t, "openai.mjs", startOpenAI, checkOpenAIKey, "hello from the fake openai", "OPENAI_API_KEY="+placeholder)
}

func TestNodeAnthropicSDK(t *testing.T) {
	testNode(t, "anthropic.mjs", startAnthropic, checkAnthropicKey, "hello from the fake anthropic", "ANTHROPIC_API_KEY="+placeholder)
}

func testNode(t *testing.T, script string, start func(*testing.T) *upstream, check func(*testing.T, *upstream), want string, key string) {
	if nodeInstallErr != nil {
		t.Fatalf("the Node preload is not installed: %v", nodeInstallErr)
	}
	dir := filepath.Join(repoRoot, "test", "clients", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil {
		t.Fatalf("test/clients/node has no node_modules (scripts/test.sh runs npm ci --prefix test/clients/node): %v", err)
	}
	u := start(t)
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: openaiRules})
	cmd := exec.Command(tool(t, "node"), "--import", "./loopback-only.mjs", script)
	cmd.Dir = dir
	cmd.Env = p.agentEnv(t, key)
	out := streamed(t, u, &client{name: "node " + script, cmd: cmd})
	if !strings.Contains(out, want) {
		t.Errorf("node %s: expected %q in the output; got:\n%s", script, want, out)
	}
	check(t, u)
}
