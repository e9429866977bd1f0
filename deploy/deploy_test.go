// Package deploy holds the docker-compose and Kubernetes sidecar examples.
// These tests keep them from drifting: each embedded credproxy config must
// load, and the agent's proxy, CA and probe settings must point at what the
// config actually serves. No container runtime runs here, but a pod is a
// network namespace: pod_test.go runs the Kubernetes manifests for real, as
// processes in namespaces (as root).
package deploy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/credproxy/credproxy/rules"
)

func TestComposeSidecar(t *testing.T) {
	data, err := os.ReadFile("compose/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, tokenFile := parseWithAdminToken(t, "compose/rules.yaml", data)
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Ports       []string          `yaml:"ports"`
			Secrets     []string          `yaml:"secrets"`
			NetworkMode string            `yaml:"network_mode"`
		} `yaml:"services"`
		Secrets map[string]struct {
			File string `yaml:"file"`
		} `yaml:"secrets"`
	}
	mustDecode(t, "compose/docker-compose.yaml", &compose)
	proxy, agent := compose.Services["credproxy"], compose.Services["agent"]
	// The admin API must be out of the agent's reach: bound to the proxy
	// container's loopback, not published, and no service shares that loopback.
	adminHost, adminPort, _ := net.SplitHostPort(cfg.Admin)
	if ip := net.ParseIP(adminHost); ip == nil || !ip.IsLoopback() {
		t.Errorf("admin listens on %s; want the credproxy container's loopback, which the agent's network cannot reach", cfg.Admin)
	}
	for _, p := range proxy.Ports {
		if strings.HasSuffix(p, ":"+adminPort) || p == adminPort {
			t.Errorf("credproxy publishes the admin port: ports %q", p)
		}
	}
	for name, svc := range compose.Services {
		if name != "credproxy" && strings.Contains(svc.NetworkMode, "credproxy") {
			t.Errorf("service %s shares credproxy's network namespace (network_mode %q), and with it the admin port", name, svc.NetworkMode)
		}
	}
	// The admin token comes from a compose secret that only credproxy mounts.
	secretName := strings.TrimPrefix(tokenFile, "/run/secrets/")
	if tokenFile == "" || secretName == tokenFile || !slices.Contains(proxy.Secrets, secretName) || compose.Secrets[secretName].File == "" {
		t.Errorf("admin.tokenFile %q should be /run/secrets/<name> of a compose secret (with a file) that credproxy mounts; credproxy secrets %q",
			tokenFile, proxy.Secrets)
	}
	if slices.Contains(agent.Secrets, secretName) {
		t.Errorf("the agent mounts the admin token secret %q", secretName)
	}
	_, port, _ := net.SplitHostPort(cfg.Listen)
	if want := "http://credproxy:" + port; agent.Environment["HTTPS_PROXY"] != want {
		t.Errorf("agent HTTPS_PROXY = %q, want %q (config listens on %s)", agent.Environment["HTTPS_PROXY"], want, cfg.Listen)
	}
	// The agent must find the certificate in the volume it shares, and must
	// not be able to reach the key.
	certVol, certDir := volumeFor(t, proxy.Volumes, cfg.CA.Cert)
	keyVol, _ := volumeFor(t, proxy.Volumes, cfg.CA.Key)
	agentCert := ""
	for _, v := range agent.Volumes {
		parts := strings.Split(v, ":")
		if parts[0] == keyVol {
			t.Errorf("the agent mounts %s, the volume holding the CA key", keyVol)
		}
		if parts[0] == certVol {
			agentCert = path.Join(parts[1], strings.TrimPrefix(cfg.CA.Cert, certDir))
		}
	}
	if agentCert == "" || agent.Environment["SSL_CERT_FILE"] != agentCert || agent.Environment["REQUESTS_CA_BUNDLE"] != agentCert {
		t.Errorf("agent SSL_CERT_FILE %q / REQUESTS_CA_BUNDLE %q, want the CA certificate at %q",
			agent.Environment["SSL_CERT_FILE"], agent.Environment["REQUESTS_CA_BUNDLE"], agentCert)
	}
	if _, ok := proxy.Environment["OPENAI_API_KEY"]; !ok || agent.Environment["OPENAI_API_KEY"] != "placeholder" {
		t.Error("the real key belongs to the proxy's environment and only a placeholder to the agent's")
	}
}

// volumeFor returns the named volume and mount path that hold file.
func volumeFor(t *testing.T, vols []string, file string) (name, dir string) {
	t.Helper()
	for _, v := range vols {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && strings.HasPrefix(file, parts[1]+"/") {
			return parts[0], parts[1]
		}
	}
	t.Fatalf("no volume holds %s", file)
	return "", ""
}

type container struct {
	Name string `yaml:"name"`
	Env  []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	StartupProbe *struct {
		HTTPGet struct {
			Path string `yaml:"path"`
			Port int    `yaml:"port"`
		} `yaml:"httpGet"`
	} `yaml:"startupProbe"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

func (c container) env(name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestKubernetesSidecar(t *testing.T) {
	var configMap struct {
		Data map[string]string `yaml:"data"`
	}
	var pod struct {
		Spec struct {
			InitContainers []container `yaml:"initContainers"`
			Containers     []container `yaml:"containers"`
			Volumes        []struct {
				Name   string `yaml:"name"`
				Secret *struct {
					SecretName string `yaml:"secretName"`
				} `yaml:"secret"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	}
	docs := decodeAll(t, "kubernetes/credproxy-sidecar.yaml")
	for _, d := range docs {
		switch d.Kind {
		case "ConfigMap":
			d.node.Decode(&configMap)
		case "Pod":
			d.node.Decode(&pod)
		}
	}
	cfg, tokenFile := parseWithAdminToken(t, "kubernetes/credproxy-sidecar.yaml#rules.yaml", []byte(configMap.Data["rules.yaml"]))
	if len(pod.Spec.InitContainers) != 1 || len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one sidecar and one agent, got %d and %d", len(pod.Spec.InitContainers), len(pod.Spec.Containers))
	}
	side, agent := pod.Spec.InitContainers[0], pod.Spec.Containers[0]
	secretVolumes := map[string]string{} // volume name -> Secret name
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil {
			secretVolumes[v.Name] = v.Secret.SecretName
		}
	}
	if want := "http://" + cfg.Listen; agent.env("HTTPS_PROXY") != want {
		t.Errorf("agent HTTPS_PROXY = %q, want %q", agent.env("HTTPS_PROXY"), want)
	}
	_, adminPort, _ := net.SplitHostPort(cfg.Admin)
	if p := side.StartupProbe; p == nil || p.HTTPGet.Path != "/readyz" || adminPort != itoa(p.HTTPGet.Port) {
		t.Errorf("sidecar startupProbe should GET /readyz on the admin port %s", adminPort)
	}
	mounts := func(c container) map[string]string {
		m := map[string]string{}
		for _, v := range c.VolumeMounts {
			m[v.Name] = v.MountPath
		}
		return m
	}
	sm, am := mounts(side), mounts(agent)
	caDir := path.Dir(cfg.CA.Cert)
	if sm["ca"] != caDir {
		t.Errorf("sidecar mounts volume ca at %q, config writes the CA certificate to %q", sm["ca"], caDir)
	}
	if want := path.Join(am["ca"], path.Base(cfg.CA.Cert)); agent.env("SSL_CERT_FILE") != want {
		t.Errorf("agent SSL_CERT_FILE = %q, want %q", agent.env("SSL_CERT_FILE"), want)
	}
	for name := range am {
		if sm[name] == path.Dir(cfg.CA.Key) {
			t.Errorf("the agent mounts %q, the volume holding the CA key", name)
		}
	}
	// The agent shares the pod's loopback, so it can reach the admin port:
	// the token must come from a Secret volume only the sidecar mounts.
	tokenVol := ""
	for name, dir := range sm {
		if tokenFile != "" && path.Dir(tokenFile) == dir {
			tokenVol = name
		}
	}
	if tokenVol == "" || secretVolumes[tokenVol] == "" {
		t.Errorf("admin.tokenFile %q should live in a Secret volume the sidecar mounts (sidecar mounts %v)", tokenFile, sm)
	}
	if _, ok := am[tokenVol]; ok && tokenVol != "" {
		t.Errorf("the agent mounts %q, the volume holding the admin token", tokenVol)
	}
}

// parseWithAdminToken parses a config whose admin.tokenFile names a file
// that exists only in the container: the loader reads it, so the test points
// it at a temporary token first. It returns the config and the tokenFile
// the example names.
func parseWithAdminToken(t *testing.T, name string, data []byte) (*rules.Config, string) {
	t.Helper()
	var raw struct {
		Admin yaml.Node `yaml:"admin"`
	}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var admin struct {
		TokenFile string `yaml:"tokenFile"`
	}
	if raw.Admin.Kind != yaml.MappingNode || raw.Admin.Decode(&admin) != nil || admin.TokenFile == "" {
		t.Fatalf("%s: admin has no tokenFile; want admin: {listen: …, tokenFile: …}", name)
	}
	tmp := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tmp, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := rules.Parse(name, bytes.ReplaceAll(data, []byte(admin.TokenFile), []byte(tmp)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, admin.TokenFile
}

func itoa(n int) string { return strconv.Itoa(n) }

type doc struct {
	Kind string `yaml:"kind"`
	node yaml.Node
}

func decodeAll(t *testing.T, file string) []doc {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []doc
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var d doc
		n.Decode(&d)
		d.node = n
		docs = append(docs, d)
	}
}

func mustDecode(t *testing.T, file string, v any) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func TestKubernetesTransparent(t *testing.T) {
	const file = "kubernetes/credproxy-transparent.yaml"
	m := readManifest(t, file)
	cfg, tokenFile := parseWithAdminToken(t, file+"#rules.yaml", []byte(m.configMaps["credproxy-rules"]["rules.yaml"]))
	if !cfg.Transparent.Enabled() {
		t.Fatal("the config has no transparent: block")
	}
	side, jobs := m.sidecar(t)
	if len(jobs) != 1 {
		t.Fatalf("want one init job (credproxy iptables), got %d", len(jobs))
	}
	job, agent := jobs[0], m.pod.Spec.Containers[0]
	sc := job.SecurityContext.Capabilities
	if !slices.Equal(sc.Add, []string{"NET_ADMIN"}) || !slices.Contains(sc.Drop, "ALL") {
		t.Errorf("the iptables init container's capabilities add %q drop %q; want NET_ADMIN only", sc.Add, sc.Drop)
	}
	sideUID, _ := side.ids()
	agentUID, _ := agent.ids()
	if side.SecurityContext.RunAsUser == nil || sideUID == agentUID || sideUID == 0 {
		t.Errorf("credproxy runs as uid %v, the agent as %d: credproxy needs its own, explicit, non-root uid", side.SecurityContext.RunAsUser, agentUID)
	}
	wantArgs := []string{"iptables", "--config", side.Args[2], "--uid", itoa(sideUID)}
	if !slices.Equal(job.Args, wantArgs) {
		t.Errorf("init args %q, want %q: the uid excluded must be the one credproxy runs as", job.Args, wantArgs)
	}
	for _, e := range agent.Env {
		if strings.HasSuffix(strings.ToUpper(e.Name), "_PROXY") {
			t.Errorf("the agent sets %s: the transparent pod needs no proxy variables", e.Name)
		}
	}
	caVol := ""
	for _, mt := range side.VolumeMounts {
		if mt.MountPath == path.Dir(cfg.CA.Cert) {
			caVol = mt.Name
		}
	}
	for _, mt := range agent.VolumeMounts {
		if mt.Name != caVol || !mt.ReadOnly {
			t.Errorf("the agent mounts %s (read-only %v); want only the CA certificate's volume %s, read-only", mt.Name, mt.ReadOnly, caVol)
			continue
		}
		want := path.Join(mt.MountPath, path.Base(cfg.CA.Cert))
		for _, v := range []string{"SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE"} {
			if agent.env(v) != want {
				t.Errorf("agent %s = %q, want %q", v, agent.env(v), want)
			}
		}
	}
	if tokenFile == "" {
		t.Error("the admin API shares the pod's loopback: it needs admin.tokenFile")
	}
}
