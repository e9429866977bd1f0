package clients

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/proctest"
	"github.com/credproxy/credproxy/internal/testutil"
)

// proc is a running credproxy process.
type proc struct {
	t         *testing.T
	dir       string
	cfgFile   string
	caFile    string // credproxy's own CA
	rootsFile string // what credproxy reads as the system roots (SSL_CERT_FILE)
	proxyAddr string
	env       []string // credproxy's own environment
	child     *proctest.Proc
	out, errb testutil.SyncBuffer
}

// procOpts: Upstreams are reached through upstream.connectTo on their real
// names at port 443; YAML (credentials, rules, clients…) is appended.
type procOpts struct {
	Upstreams []*upstream
	YAML      string
}

// startProc writes a config and starts credproxy with the test keys in its
// environment and the public CA as its system roots.
func startProc(t *testing.T, o procOpts) *proc {
	t.Helper()
	return startProcEnv(t, o)
}

// startProcEnv is startProc with more variables in credproxy's environment.
func startProcEnv(t *testing.T, o procOpts, env ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{t: t, dir: dir,
		cfgFile: filepath.Join(dir, "credproxy.yaml"), caFile: filepath.Join(caDir, "ca.pem"),
		rootsFile: filepath.Join(dir, "system-roots.pem")}
	writeFile(t, p.rootsFile, readFile(t, publicCA.certFile))
	writeFile(t, filepath.Join(dir, "admin-token"), adminToken+"\n")
	p.proxyAddr = freeAddr(t)
	var connect []string
	for _, u := range o.Upstreams {
		connect = append(connect, fmt.Sprintf("%q: %q", u.name+":443", u.addr))
	}
	sort.Strings(connect)
	cfg := fmt.Sprintf(`listen: %s
admin: {listen: 127.0.0.1:0, tokenFile: %s}
identity: clients-test
ca: {cert: %s, key: %s}
upstream:
  caFiles: [%s]
  connectTo: {%s}
`, p.proxyAddr, filepath.Join(dir, "admin-token"), p.caFile, filepath.Join(caDir, "ca-key.pem"),
		apiCA.certFile, strings.Join(connect, ", ")) + o.YAML
	writeFile(t, p.cfgFile, cfg)
	p.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "SSL_CERT_FILE=" + p.rootsFile,
		"CP_OPENAI_KEY=" + openaiKey, "CP_ANTHROPIC_KEY=" + anthropicKey, "CP_GITHUB_KEY=" + githubKey}
	p.env = append(p.env, env...)
	var err error
	p.child, err = proctest.Start(proctest.Options{Bin: binPath, Config: p.cfgFile, Args: []string{"--log-format", "json"},
		Dir: dir, Env: p.env, Stdout: &p.out, Stderr: &p.errb})
	if err != nil {
		noKey(t, "credproxy stdout (audit)", p.out.String())
		noKey(t, "credproxy stderr (logs)", p.errb.String())
		t.Fatalf("%v; expected a \"credproxy started\" log line.\nconfig:\n%s\nstderr:\n%s", err, cfg, p.errb.String())
	}
	t.Cleanup(p.stop)
	return p
}

// freeAddr picks a free loopback port for the proxy listener: `credproxy
// env` reads the listen address from the config, so it cannot be :0.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// stop sends SIGTERM and checks that credproxy's own output holds no key.
func (p *proc) stop() {
	err := p.child.Stop(30 * time.Second)
	var exit *exec.ExitError
	switch {
	case errors.Is(err, proctest.ErrExited):
		p.t.Errorf("%v; expected it to keep running until the test ended.\nstderr tail:\n%s", err, tail(p.errb.String()))
	case err != nil && !errors.As(err, &exit): // its exit status after SIGTERM is not checked
		p.t.Errorf("%v", err)
	}
	noKey(p.t, "credproxy stdout (audit)", p.out.String())
	noKey(p.t, "credproxy stderr (logs)", p.errb.String())
}

// audit decodes the JSON audit lines credproxy wrote so far.
func (p *proc) audit() []map[string]any {
	var evs []map[string]any
	for _, line := range strings.Split(p.out.String(), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) == nil && ev["event"] != nil {
			evs = append(evs, ev)
		}
	}
	return evs
}

// agentEnv is the environment a client gets: what `credproxy env --format
// json` prints for this config, and nothing else of the test's.
func (p *proc) agentEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	return p.agentEnvAs(t, "", extra...)
}

// agentEnvAs is agentEnv for the config's client name (`--client NAME`).
func (p *proc) agentEnvAs(t *testing.T, name string, extra ...string) []string {
	t.Helper()
	vars := p.envVars(t, name)
	home := filepath.Join(p.dir, "agent-home")
	_ = os.MkdirAll(home, 0o700)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8"}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return append(env, extra...)
}

// envVars runs `credproxy env --config FILE --format json` with
// credproxy's own environment (it reads the same system roots), and with
// --client NAME when name is not "".
func (p *proc) envVars(t *testing.T, name string) map[string]string {
	t.Helper()
	args := []string{"env", "--config", p.cfgFile, "--format", "json"}
	if name != "" {
		args = append(args, "--client", name)
	}
	cmd := exec.Command(binPath, args...)
	cmd.Dir, cmd.Env = p.dir, p.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("credproxy %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var env struct {
		Set   map[string]string `json:"set"`
		Unset []string          `json:"unset"`
	}
	if err := json.Unmarshal(out, &env); err != nil || env.Set["HTTPS_PROXY"] == "" {
		t.Fatalf("credproxy env --format json: expected {\"set\": {\"HTTPS_PROXY\": …}}; got %q (%v)", out, err)
	}
	return env.Set
}

// client is one run of a real client program.
type client struct {
	name   string
	cmd    *exec.Cmd
	onLine func(string) // called for each stdout line as it arrives
}

// run starts the client, feeds its stdout lines to onLine as they arrive,
// waits at most 60 s and returns stdout+stderr; the output may hold no key.
func (c *client) run(t *testing.T) (string, error) {
	t.Helper()
	var stderr testutil.SyncBuffer
	c.cmd.Stderr = &stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("%s: start: %v", c.name, err)
	}
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		br := bufio.NewReader(stdout)
		for {
			line, err := br.ReadString('\n')
			out.WriteString(line)
			if line != "" && c.onLine != nil {
				c.onLine(line)
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.AfterFunc(60*time.Second, func() { _ = c.cmd.Process.Kill() })
	<-done
	err = c.cmd.Wait()
	timer.Stop()
	all := out.String() + stderr.String()
	noKey(t, c.name+" output", all)
	return all, err
}

// streamed runs a client whose stdout shows a stream, and opens u's gate
// once the client has printed the first chunk ("chunk-one"); it fails if
// the client showed nothing until the upstream gave up waiting.
func streamed(t *testing.T, u *upstream, c *client) string {
	t.Helper()
	c.onLine = func(line string) {
		if strings.Contains(line, "chunk-one") {
			u.gate.open()
		}
	}
	out, err := c.run(t)
	if err != nil {
		t.Fatalf("%s: %v\n%s", c.name, err, out)
	}
	one, two := strings.Index(out, "chunk-one"), strings.Index(out, "chunk-two")
	if one < 0 || two < one {
		t.Errorf("%s: expected chunk-one, then chunk-two in the output; got:\n%s", c.name, out)
	}
	if u.gate.expired() {
		t.Errorf("%s: the upstream held the stream after its first chunk for 30s and the client printed nothing; expected the first chunk to reach the client while the rest was held", c.name)
	}
	return out
}

// noKey fails if s holds any real key.
func noKey(t *testing.T, where, s string) {
	t.Helper()
	for _, k := range []string{openaiKey, anthropicKey, githubKey, adminToken} {
		if strings.Contains(s, k) {
			t.Errorf("%s holds a real key (%s…); expected only placeholders", where, k[:12])
		}
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}
