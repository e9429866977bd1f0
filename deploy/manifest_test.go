package deploy

import (
	"strings"
	"testing"
)

// A Kubernetes manifest's Pod, ConfigMaps and Secrets, as much of them as
// the pod tests run.

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
