package deploy

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/credproxy/credproxy/internal/netnstest"
	"github.com/credproxy/credproxy/internal/proctest"
	"github.com/credproxy/credproxy/internal/testutil"
)

// The compose project run for real: each service is a network namespace on
// one bridge (the project network), with the other services' names in its
// /etc/hosts as compose's DNS would answer them. Services, commands, env,
// volumes and secrets come from docker-compose.yaml as compose-go's loader
// reads it (docker compose's own: interpolation, relative paths, volume and
// secret syntax); named volumes and secrets become directories and files,
// bind mounts the project's own files.

const (
	composeCredproxyIP = "10.77.0.10"
	composeAgentIP     = "10.77.0.11"
)

// loadCompose loads compose/docker-compose.yaml as docker compose would,
// with env as the variables its ${...} interpolate.
func loadCompose(t *testing.T, env map[string]string) *types.Project {
	t.Helper()
	dir, err := filepath.Abs("compose")
	if err != nil {
		t.Fatal(err)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "docker-compose.yaml")}},
		Environment: env,
	}, func(o *loader.Options) { o.SetProjectName("credproxy-test", true) })
	if err != nil {
		t.Fatalf("compose-go: %v", err)
	}
	return p
}

// composeProject is the compose file started in namespaces.
type composeProject struct {
	root string
	proj *types.Project
	vols map[string]string // named volume → directory
}

// mounts maps a service's container paths to host paths: its named volumes
// (a directory each, shared by the services that name it), its bind mounts
// of project files (a copy under root, passed through edit with the whole
// map known) and its secrets (/run/secrets/NAME, holding the test token).
func (c *composeProject) mounts(t *testing.T, svc types.ServiceConfig, uid int, edit func(m map[string]string, text string) string) map[string]string {
	t.Helper()
	m := map[string]string{}
	binds := map[string]string{} // host copy → project file
	for _, v := range svc.Volumes {
		src, dst := v.Source, v.Target
		switch v.Type {
		case types.VolumeTypeBind: // the loader made src absolute
			m[dst] = filepath.Join(c.root, "bind", filepath.Base(src))
			binds[m[dst]] = src
			continue
		case types.VolumeTypeVolume:
		default:
			t.Fatalf("service %s: volume %s of type %s: the test knows bind and volume", svc.Name, dst, v.Type)
		}
		if c.vols[src] == "" {
			c.vols[src] = filepath.Join(c.root, "vol-"+src)
			if err := os.MkdirAll(c.vols[src], 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(c.vols[src], uid, uid); err != nil {
				t.Fatal(err)
			}
		}
		m[dst] = c.vols[src]
	}
	for _, sc := range svc.Secrets {
		if c.proj.Secrets[sc.Source].File == "" {
			t.Fatalf("secret %s has no file", sc.Source)
		}
		target := sc.Target
		if target == "" || !filepath.IsAbs(target) {
			target = "/run/secrets/" + cmp.Or(target, sc.Source)
		}
		m[target] = filepath.Join(c.root, "secrets", sc.Source)
		writeOwned(t, m[target], []byte(podTestToken+"\n"), uid)
	}
	for host, src := range binds {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		writeOwned(t, host, []byte(edit(m, string(data))), uid)
	}
	return m
}

func writeOwned(t *testing.T, file string, data []byte, uid int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(file, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// mapPaths rewrites every container path of m in s, longest first.
func mapPaths(m map[string]string, s string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	var pairs []string
	for _, k := range keys {
		pairs = append(pairs, k, m[k])
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// envOf is a service's environment (interpolated by the loader), paths
// mapped; a variable without a value is left unset, as compose does.
func envOf(svc types.ServiceConfig, m map[string]string) []string {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/"}
	for k, v := range svc.Environment {
		if v != nil {
			env = append(env, k+"="+mapPaths(m, *v))
		}
	}
	return env
}

func TestComposeProject(t *testing.T) {
	lookPath(t, "python3")
	lookPath(t, "curl")
	netnstest.RequireRoot(t)
	// The key is what ${OPENAI_API_KEY:-} interpolates in credproxy's
	// environment; the agent's stays the file's placeholder.
	c := &composeProject{root: rootDir(t), proj: loadCompose(t, map[string]string{"OPENAI_API_KEY": podTestKey}), vols: map[string]string{}}
	proxySvc, agentSvc := c.proj.Services["credproxy"], c.proj.Services["agent"]

	br := netnstest.NewBridge(t)
	proxyNS, agentNS, inet := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	br.Attach(t, proxyNS, composeCredproxyIP+"/24")
	br.Attach(t, agentNS, composeAgentIP+"/24")
	br.Attach(t, inet, internetIP+"/24")
	// Compose's DNS answers service names; the API name is the fake internet.
	proxyNS.Hosts(t, internetIP+" api.openai.com", composeAgentIP+" agent")
	agentNS.Hosts(t, composeCredproxyIP+" credproxy", internetIP+" api.openai.com")
	up := startUpstreams(t, inet, c.root)

	// credproxy, as the image's user, with the project's rules.yaml (paths
	// mapped, the fake internet's CA added) and the key in its environment.
	proxyMounts := c.mounts(t, proxySvc, imageUID, func(m map[string]string, text string) string {
		return mapPaths(m, text) + fmt.Sprintf("upstream: {caFiles: [%s]}\n", up.caFile)
	})
	cmd := proxySvc.Command
	if len(cmd) != 3 || cmd[0] != "run" || cmd[1] != "--config" {
		t.Fatalf("credproxy command %q: want run --config FILE", cmd)
	}
	wrapper := filepath.Join(c.root, "credproxy-in-compose")
	inNS := append([]string{"ip", "netns", "exec", proxyNS.Name, "setpriv", fmt.Sprintf("--reuid=%d", imageUID), fmt.Sprintf("--regid=%d", imageUID),
		"--clear-groups", "--pdeathsig=KILL", "env", "-i"}, append(envOf(proxySvc, proxyMounts), credproxyBin(t))...)
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec "+shellQuote(inNS)+` "$@"`+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	log := &testutil.SyncBuffer{}
	proc, err := proctest.Start(proctest.Options{Bin: wrapper, Config: mapPaths(proxyMounts, cmd[2]), Stderr: log, Dir: c.root})
	if err != nil {
		t.Fatalf("start credproxy: %v\n%s", err, log.String())
	}
	t.Cleanup(func() {
		if err := proc.Stop(20 * time.Second); err != nil {
			t.Errorf("credproxy stop: %v", err)
		}
		if t.Failed() {
			t.Logf("credproxy log:\n%s", log.String())
		}
	})

	// The agent: its own command and environment (HTTPS_PROXY=http://credproxy:3128).
	agentMounts := c.mounts(t, agentSvc, 0, func(_ map[string]string, text string) string { return text })
	run := func(argv ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		full := append(append([]string{"env", "-i"}, envOf(agentSvc, agentMounts)...), argv...)
		out, err := agentNS.Command(ctx, full[0], full[1:]...).CombinedOutput()
		return string(out), err
	}
	argv := append([]string(nil), agentSvc.Command...)
	if argv[0] == "python" {
		argv[0] = "python3"
	}
	out, err := run(argv...)
	if err != nil || strings.TrimSpace(out) != "200" {
		t.Fatalf("the agent's command: %v, printed %q; want 200", err, out)
	}
	if n := up.credentialSeen(); n != 1 {
		t.Errorf("the upstream saw the credential %d times, want 1: %+v", n, up.requests())
	}
	// The admin port is on credproxy's loopback: from the agent's
	// namespace, neither by service name nor through the proxy.
	const adminPort = "9464" // compose/rules.yaml; TestComposeSidecar checks it is loopback-only
	if out, err := run("curl", "-sS", "--noproxy", "*", "--max-time", "10", "http://credproxy:"+adminPort+"/healthz"); err == nil {
		t.Errorf("the agent reached credproxy's admin port directly: %q", out)
	}
	if out, _ := run("curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:"+adminPort+"/healthz"); strings.TrimSpace(out) == "200" {
		t.Errorf("the agent reached the admin API through the proxy: %q", out)
	}
}
