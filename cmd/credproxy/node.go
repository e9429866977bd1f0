package main

import (
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// nodeFiles are the Node preload and the npm files that pin its one
// dependency, undici. Node before 22.21 and 24.5 ignores HTTPS_PROXY in its
// built-in fetch; the preload installs undici's EnvHttpProxyAgent as the
// global dispatcher, which that fetch uses.
//
//go:embed node/preload.mjs node/package.json node/package-lock.json
var nodeFiles embed.FS

// nodeDirName is the directory beside the CA that holds the preload.
const nodeDirName = "credproxy-node"

// nodePreload is the preload's directory and whether the pinned undici is
// installed there.
type nodePreload struct {
	Dir       string
	Installed bool
}

func (n nodePreload) script() string { return filepath.Join(n.Dir, "preload.mjs") }

// ensureNodePreload writes the embedded files into the directory beside
// caCert (when they differ) and reports whether undici is installed there.
func ensureNodePreload(caCert string) (nodePreload, error) {
	dir, err := filepath.Abs(filepath.Join(filepath.Dir(caCert), nodeDirName))
	if err != nil {
		return nodePreload{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nodePreload{}, fmt.Errorf("node preload: %w", err)
	}
	for _, name := range []string{"preload.mjs", "package.json", "package-lock.json"} {
		data, err := nodeFiles.ReadFile("node/" + name)
		if err != nil {
			return nodePreload{}, err
		}
		if err := writeIfChanged(filepath.Join(dir, name), data, 0o644); err != nil {
			return nodePreload{}, fmt.Errorf("node preload: %w", err)
		}
	}
	return nodePreload{Dir: dir, Installed: undiciInstalled(dir)}, nil
}

// undiciInstalled reports whether dir/node_modules/undici is the version the
// embedded lock pins: an older credproxy's install counts as missing.
func undiciInstalled(dir string) bool {
	var lock struct {
		Packages map[string]struct{ Version string } `json:"packages"`
	}
	var pkg struct{ Version string }
	data, _ := nodeFiles.ReadFile("node/package-lock.json")
	if json.Unmarshal(data, &lock) != nil {
		return false
	}
	installed, err := os.ReadFile(filepath.Join(dir, "node_modules", "undici", "package.json"))
	if err != nil || json.Unmarshal(installed, &pkg) != nil {
		return false
	}
	return pkg.Version == lock.Packages["node_modules/undici"].Version
}

// installNode runs npm ci in the preload's directory; npm's output goes to w.
func installNode(n nodePreload, w io.Writer) error {
	cmd := exec.Command("npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--prefix", n.Dir)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm ci --prefix %s: %w", n.Dir, err)
	}
	if !undiciInstalled(n.Dir) {
		return fmt.Errorf("npm ci --prefix %s: undici is still not installed", n.Dir)
	}
	return nil
}
