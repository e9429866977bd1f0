package deploy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/netnstest"
	"github.com/credproxy/credproxy/internal/proctest"
	"github.com/credproxy/credproxy/internal/testutil"
)

// A Kubernetes manifest run for real, as processes in network namespaces:
// the pod is one namespace (its containers share it, as in Kubernetes), the
// internet another holding the API upstreams, joined by a veth pair. Its
// volumes are directories (emptyDir → an empty one, a ConfigMap or Secret →
// its files), each container's paths are mapped through its volumeMounts,
// its commands, args, env and users come from the manifest. Only what cannot
// come from it is the test's: the upstreams' CA (upstream.caFiles is added
// to the config) and the Secrets' values (test keys, not the placeholders).

const (
	podTestKey   = "sk-test-pod-0123456789abcdef"
	podTestToken = "test-admin-token-0123456789abcdef"
	podAddr      = "10.77.0.1/24"
	internetIP   = "10.77.0.2"
)

// runningPod is a manifest's pod started in a namespace.
type runningPod struct {
	m         *manifest
	ns        *netnstest.NS
	root      string
	vols      map[string]string // volume name → directory
	bin       string
	up        *upstreams
	credproxy *proctest.Proc
	log       *testutil.SyncBuffer
	side      k8sContainer
	sideUID   int
}

// startPod runs m's pod: volumes, then the init jobs as root (in the pod,
// with the capabilities the manifest gives them), then the sidecar as its
// user, until the test ends. editConfig may change the sidecar's config.
func startPod(t *testing.T, file string, editConfig func(string) string) *runningPod {
	t.Helper()
	netnstest.RequireRoot(t)
	m := readManifest(t, file)
	p := &runningPod{m: m, bin: credproxyBin(t), log: &testutil.SyncBuffer{}}
	p.root = rootDir(t)
	p.ns = netnstest.New(t)
	inet := netnstest.New(t)
	netnstest.Link(t, p.ns, inet, podAddr, internetIP+"/24")
	p.ns.Hosts(t, internetIP+" api.openai.com unruled.example.test")
	p.up = startUpstreams(t, inet, p.root)
	var jobs []k8sContainer
	p.side, jobs = m.sidecar(t)
	p.sideUID, _ = p.side.ids()
	p.makeVolumes(t, editConfig)
	for _, c := range jobs {
		p.runJob(t, c)
	}
	p.startSidecar(t)
	return p
}

// rootDir is a directory every user in the pod can enter (t.TempDir's
// parent is not), removed at the end.
func rootDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "credproxy-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// makeVolumes creates each volume as a directory owned by the sidecar's
// user (as fsGroup would make it readable to it). ConfigMap files are
// written with the sidecar's paths mapped to these directories.
func (p *runningPod) makeVolumes(t *testing.T, editConfig func(string) string) {
	t.Helper()
	p.vols = map[string]string{}
	for _, v := range p.m.pod.Spec.Volumes {
		p.vols[v.Name] = filepath.Join(p.root, "vol-"+v.Name)
	}
	_, sideGID := p.side.ids()
	for _, v := range p.m.pod.Spec.Volumes {
		dir := p.vols[v.Name]
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{}
		switch {
		case v.ConfigMap != nil:
			for k, text := range p.m.configMaps[v.ConfigMap.Name] {
				text = p.hostPaths(p.side, text) + fmt.Sprintf("upstream: {caFiles: [%s]}\n", p.up.caFile)
				if editConfig != nil {
					text = editConfig(text)
				}
				files[k] = text
			}
		case v.Secret != nil:
			for k := range p.m.secrets[v.Secret.SecretName] {
				// The manifest holds placeholders; the test's values stand in.
				files[k] = podTestKey
				if strings.Contains(k, "token") {
					files[k] = podTestToken
				}
			}
		}
		for name, content := range files {
			f := filepath.Join(dir, name)
			if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(f, p.sideUID, sideGID); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(dir, p.sideUID, sideGID); err != nil {
			t.Fatal(err)
		}
	}
}

// hostPath maps a path inside container c to the test's directories,
// through c's volumeMounts (the longest mount path that holds it).
func (p *runningPod) hostPath(c k8sContainer, path string) string {
	best := ""
	host := path
	for _, m := range c.VolumeMounts {
		if (path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/")) && len(m.MountPath) > len(best) {
			best = m.MountPath
			host = p.vols[m.Name] + strings.TrimPrefix(path, m.MountPath)
		}
	}
	return host
}

// hostPaths maps every mount path of c found in text.
func (p *runningPod) hostPaths(c k8sContainer, text string) string {
	var mounts []string
	for _, m := range c.VolumeMounts {
		mounts = append(mounts, m.MountPath)
	}
	// Longest first: /var/lib/credproxy/public before /var/lib/credproxy.
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	var pairs []string
	for _, m := range mounts {
		pairs = append(pairs, m+"/", p.hostPath(c, m)+"/")
	}
	return strings.NewReplacer(pairs...).Replace(text)
}

// argv is a container's command line: the credproxy image's entrypoint is
// credproxy, so a container with args only runs the test's binary.
func (p *runningPod) argv(c k8sContainer) []string {
	var out []string
	if len(c.Command) == 0 {
		out = append(out, p.bin)
	} else {
		out = append(out, c.Command...)
	}
	for _, a := range c.Args {
		out = append(out, p.hostPath(c, a))
	}
	if out[0] == "python" {
		out[0] = "python3"
	}
	return out
}

// envOf is c's environment, paths mapped, plus a PATH: nothing else of the
// test's environment (no proxy variables) reaches it.
func (p *runningPod) envOf(c k8sContainer) []string {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + p.root}
	for _, e := range c.Env {
		env = append(env, e.Name+"="+p.hostPath(c, e.Value))
	}
	return env
}

// asUser runs argv in the pod as c's user with only env.
func (p *runningPod) asUser(c k8sContainer, env, argv []string) []string {
	uid, gid := c.ids()
	return append([]string{"setpriv", "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups", "--pdeathsig=KILL",
		"env", "-i"}, append(env, argv...)...)
}

// exec runs argv in the pod as c's user, bounded; it returns the output.
func (p *runningPod) exec(c k8sContainer, env, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := p.asUser(c, env, argv)
	out, err := p.ns.Command(ctx, full[0], full[1:]...).CombinedOutput()
	return string(out), err
}

// runJob runs a run-to-completion init container; it must succeed.
func (p *runningPod) runJob(t *testing.T, c k8sContainer) {
	t.Helper()
	out, err := p.exec(c, p.envOf(c), p.argv(c))
	if err != nil {
		t.Fatalf("init container %s: %v\n%s", c.Name, err, out)
	}
	t.Logf("init container %s:\n%s", c.Name, out)
}

// startSidecar starts credproxy as the sidecar's user in the pod, through a
// wrapper that proctest runs as `credproxy run --config FILE`.
func (p *runningPod) startSidecar(t *testing.T) {
	t.Helper()
	argv := p.argv(p.side)
	if len(argv) < 4 || argv[1] != "run" || argv[2] != "--config" {
		t.Fatalf("sidecar args %q: want run --config FILE", p.side.Args)
	}
	wrapper := filepath.Join(p.root, "credproxy-in-pod")
	inPod := append([]string{"ip", "netns", "exec", p.ns.Name}, p.asUser(p.side, p.envOf(p.side), []string{p.bin})...)
	script := "#!/bin/sh\nexec " + shellQuote(inPod) + ` "$@"` + "\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	proc, err := proctest.Start(proctest.Options{Bin: wrapper, Config: argv[3], Args: argv[4:], Stderr: p.log, Dir: p.root})
	if err != nil {
		t.Fatalf("start credproxy in the pod: %v\n%s", err, p.log.String())
	}
	p.credproxy = proc
	t.Cleanup(func() {
		if err := proc.Stop(20 * time.Second); err != nil {
			t.Errorf("credproxy stop: %v", err)
		}
		if t.Failed() {
			t.Logf("credproxy log:\n%s", p.log.String())
		}
	})
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// agent is the pod's (only) app container.
func (p *runningPod) agent(t *testing.T) k8sContainer {
	t.Helper()
	if len(p.m.pod.Spec.Containers) != 1 {
		t.Fatalf("want one agent container, got %d", len(p.m.pod.Spec.Containers))
	}
	return p.m.pod.Spec.Containers[0]
}

// curl runs curl in the pod as the agent's user with no proxy variables
// (and --noproxy '*' besides); it returns the HTTP status, or "" and the
// error when curl fails.
func (p *runningPod) curl(t *testing.T, args ...string) (string, string) {
	t.Helper()
	argv := append([]string{"curl", "-sS", "--noproxy", "*", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}"}, args...)
	out, err := p.exec(p.agent(t), p.envOf(k8sContainer{}), argv)
	if err != nil {
		return "", fmt.Sprintf("%v: %s", err, out)
	}
	return out, ""
}

// caFile is where the agent finds credproxy's CA (SSL_CERT_FILE), on the host.
func (p *runningPod) caFile(t *testing.T) string {
	t.Helper()
	a := p.agent(t)
	f := p.hostPath(a, a.env("SSL_CERT_FILE"))
	if _, err := os.Stat(f); err != nil {
		t.Fatalf("the agent's SSL_CERT_FILE %s: %v", a.env("SSL_CERT_FILE"), err)
	}
	return f
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// credproxyBin builds credproxy once for the package's tests.
func credproxyBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "credproxy-bin-"); binErr != nil {
			return
		}
		_ = os.Chmod(binDir, 0o755)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binPath, binErr = proctest.Build(ctx, binDir)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// lookPath fails the test when a client the pod runs is missing.
func lookPath(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed (scripts/test.sh installs the test clients): %v", name, err)
	}
}
