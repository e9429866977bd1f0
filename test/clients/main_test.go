// Package clients drives real agent clients through a real credproxy
// process: curl, Python requests, httpx and websocket-client, Node's fetch
// and the openai and Anthropic SDKs, git and Go's default client. Each
// client gets only the environment `credproxy env` prints and a
// placeholder key; the fake upstreams answer on the real API host names
// (api.openai.com, github.com, …) on loopback, reached through
// upstream.connectTo. It does not test the proxy's internals: the proxy
// and hostile packages do.
package clients

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/credproxy/credproxy/internal/proctest"
)

// Real keys the fake upstreams expect; no client output may hold them.
const (
	openaiKey    = "sk-test-clients-openai-5d1f0c9a7e3b2864"
	anthropicKey = "sk-test-clients-anthropic-a83e61c09f2d47b5"
	githubKey    = "ghp_test_clients_github_0b7c4e19d2a6f358"
	placeholder  = "placeholder"
	adminToken   = "admintok-test-clients-6a0e3f9c21b7d845"
)

var (
	repoRoot string
	binPath  string  // the credproxy binary TestMain built
	caDir    string  // credproxy's CA, the bundle and the Node preload `credproxy env` writes beside it, shared by every test
	apiCA    *testCA // signs the fake upstreams; credproxy trusts it via upstream.caFiles
	publicCA *testCA // stands in for the public roots: credproxy reads it via SSL_CERT_FILE
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv(goAgentVar) != "" {
		return goAgent()
	}
	dir, err := os.MkdirTemp("", "credproxy-clients-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	_, self, _, _ := runtime.Caller(0)
	repoRoot = filepath.Join(filepath.Dir(self), "..", "..")
	if binPath, err = proctest.Build(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, "clients:", err)
		return 1
	}
	caDir = filepath.Join(dir, "credproxy-ca")
	if err := os.Mkdir(caDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if apiCA, err = newTestCA(dir, "api"); err != nil {
		fmt.Fprintln(os.Stderr, "clients: API CA:", err)
		return 1
	}
	if publicCA, err = newTestCA(dir, "public"); err != nil {
		fmt.Fprintln(os.Stderr, "clients: public CA:", err)
		return 1
	}
	nodeInstallErr = installNodePreload(dir)
	return m.Run()
}

// nodeInstallErr is why the Node preload could not be installed, if it
// could not: the Node tests report it.
var nodeInstallErr error

// installNodePreload runs `credproxy env --install-node` once, with this
// process's environment (npm needs the machine's registry settings), so
// the preload's undici is in place beside the shared CA for every test.
func installNodePreload(dir string) error {
	cfg := filepath.Join(dir, "install.yaml")
	data := fmt.Sprintf("ca: {cert: %s, key: %s}\n", filepath.Join(caDir, "ca.pem"), filepath.Join(caDir, "ca-key.pem"))
	if err := os.WriteFile(cfg, []byte(data), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(binPath, "env", "--config", cfg, "--format", "json", "--install-node")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("credproxy env --install-node: %v\n%s", err, out)
	}
	return nil
}

// tool finds a client binary; scripts/test.sh installs every one, so a
// missing one fails the test rather than skipping it.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required (scripts/test.sh installs it): %v", name, err)
	}
	return p
}

// python is the interpreter with requests, httpx and websocket-client:
// $CREDPROXY_PYTHON, else Debian's /usr/bin/python3 (the python3 first on
// PATH may be another install without Debian's packages).
func python(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CREDPROXY_PYTHON"); p != "" {
		return tool(t, p)
	}
	return tool(t, "/usr/bin/python3")
}
