package deploy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
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
	"github.com/credproxy/credproxy/proxy"
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

type k8sContainer struct {
	Name          string   `yaml:"name"`
	Image         string   `yaml:"image"`
	Command       []string `yaml:"command"`
	Args          []string `yaml:"args"`
	RestartPolicy string   `yaml:"restartPolicy"`
	Env           []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	SecurityContext struct {
		RunAsUser    *int `yaml:"runAsUser"`
		RunAsGroup   *int `yaml:"runAsGroup"`
		Capabilities struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

func (c k8sContainer) env(name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// imageUID is the Dockerfile's USER nonroot, the credproxy image's user.
const imageUID = 65532

// ids are the container's uid and gid: the manifest's, else the image's
// (nonroot for the credproxy image, root for the others).
func (c k8sContainer) ids() (uid, gid int) {
	if c.SecurityContext.RunAsUser != nil {
		uid = *c.SecurityContext.RunAsUser
	} else if strings.HasPrefix(c.Image, "credproxy:") {
		uid = imageUID
	}
	gid = uid
	if c.SecurityContext.RunAsGroup != nil {
		gid = *c.SecurityContext.RunAsGroup
	}
	return uid, gid
}

type k8sPod struct {
	Spec struct {
		InitContainers []k8sContainer `yaml:"initContainers"`
		Containers     []k8sContainer `yaml:"containers"`
		Volumes        []struct {
			Name      string `yaml:"name"`
			ConfigMap *struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
			Secret *struct {
				SecretName string `yaml:"secretName"`
			} `yaml:"secret"`
			EmptyDir *struct{} `yaml:"emptyDir"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

// manifest is a Kubernetes file's Pod, ConfigMaps and Secrets.
type manifest struct {
	pod        k8sPod
	configMaps map[string]map[string]string // name → data
	secrets    map[string]map[string]string // name → stringData
}

func readManifest(t *testing.T, file string) *manifest {
	t.Helper()
	m := &manifest{configMaps: map[string]map[string]string{}, secrets: map[string]map[string]string{}}
	for _, d := range decodeAll(t, file) {
		var meta struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Data       map[string]string `yaml:"data"`
			StringData map[string]string `yaml:"stringData"`
		}
		if err := d.node.Decode(&meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch d.Kind {
		case "Pod":
			if err := d.node.Decode(&m.pod); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
		case "ConfigMap":
			m.configMaps[meta.Metadata.Name] = meta.Data
		case "Secret":
			m.secrets[meta.Metadata.Name] = meta.StringData
		}
	}
	return m
}

// sidecar is the init container Kubernetes keeps running (restartPolicy
// Always); jobs are the other init containers, run once before it.
func (m *manifest) sidecar(t *testing.T) (side k8sContainer, jobs []k8sContainer) {
	t.Helper()
	found := false
	for _, c := range m.pod.Spec.InitContainers {
		if c.RestartPolicy == "Always" {
			side, found = c, true
		} else {
			jobs = append(jobs, c)
		}
	}
	if !found {
		t.Fatal("the pod has no native sidecar (an init container with restartPolicy: Always)")
	}
	return side, jobs
}

// upstreams is the fake internet: one address, an HTTPS and a plain HTTP
// server answering for every API name, recording what they saw.
type upstreams struct {
	caFile string
	mu     sync.Mutex
	seen   []seenRequest
}

type seenRequest struct {
	TLS                       bool
	Host, Path, Authorization string
}

func (u *upstreams) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

// credentialSeen counts requests that carried the real key.
func (u *upstreams) credentialSeen() int {
	n := 0
	for _, r := range u.requests() {
		if strings.Contains(r.Authorization, podTestKey) {
			n++
		}
	}
	return n
}

func startUpstreams(t *testing.T, inet *netnstest.NS, dir string) *upstreams {
	t.Helper()
	u := &upstreams{caFile: filepath.Join(dir, "upstream-ca.pem")}
	ca, _, err := proxy.LoadOrCreateCA(u.caFile, filepath.Join(dir, "upstream-ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignLeaf("api.openai.com", "unruled.example.test", internetIP)
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, seenRequest{TLS: r.TLS != nil, Host: r.Host, Path: r.URL.Path, Authorization: r.Header.Get("Authorization")})
		u.mu.Unlock()
		if r.URL.Path == "/v1/chat/completions" {
			chatCompletion(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"gpt-test","object":"model","created":0,"owned_by":"test"}]}`)
	})
	for _, l := range []struct {
		port string
		tls  bool
	}{{"443", true}, {"80", false}} {
		ln := inet.Listen(t, "tcp", net.JoinHostPort(internetIP, l.port))
		if l.tls {
			ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*leaf}, NextProtos: []string{"h2", "http/1.1"}})
		}
		// A client that rejects a certificate aborts its handshake: not news.
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	return u
}

// podReply is what the fake chat completions API answers, whole or streamed.
const podReply = "hello from the pod's upstream"

// chatCompletion answers the openai SDK's chat.completions.create, as JSON
// or, with "stream": true, as server-sent events.
func chatCompletion(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Stream bool `json:"stream"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","created":0,"model":"gpt-test","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}]}`, podReply)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"gpt-test\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", podReply)
	fmt.Fprint(w, "data: [DONE]\n\n")
}

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
