package clients

import (
	"encoding/base64"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const githubRules = `credentials:
  github: {source: env, env: CP_GITHUB_KEY}
rules:
  - name: github-refs
    hosts: [github.com]
    paths: ["/*/*/info/refs"]
    methods: [GET]
    credential: github
    inject: {header: Authorization, value: '{{ basic "x-access-token" .Value }}'}
  - name: github-upload-pack
    hosts: [github.com]
    paths: ["/*/*/git-upload-pack"]
    methods: [POST]
    credential: github
    inject: {header: Authorization, value: '{{ basic "x-access-token" .Value }}'}
`

// TestGitCloneAndFetch: git clone and git fetch of a repository that
// git http-backend serves on github.com's name, which answers 401 without
// GitHub's Basic x-access-token credential. git gets the env and no
// credential; GIT_TERMINAL_PROMPT=0 makes a prompt a failure.
func TestGitCloneAndFetch(t *testing.T) {
	gitBin := tool(t, "git")
	backend := gitHTTPBackend(t, gitBin)
	root := t.TempDir()
	src := filepath.Join(root, "src")
	bare := filepath.Join(root, "srv", "credproxy", "demo.git")
	fixture := func(args ...string) string { return runGit(t, gitBin, args...) }
	fixture("init", "-q", "-b", "main", src)
	writeFile(t, filepath.Join(src, "README"), "one\n")
	fixture("-C", src, "add", "README")
	fixture("-C", src, "commit", "-q", "-m", "one")
	fixture("clone", "-q", "--bare", src, bare)
	first := strings.TrimSpace(fixture("-C", src, "rev-parse", "HEAD"))

	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+githubKey))
	cgiH := &cgi.Handler{Path: backend, Root: "/", Env: []string{"GIT_PROJECT_ROOT=" + filepath.Join(root, "srv"), "GIT_HTTP_EXPORT_ALL=1"}}
	u := startUpstream(t, "github.com", apiCA, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		cgiH.ServeHTTP(w, r)
	})
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: githubRules})
	env := p.agentEnv(t, "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
	agentGit := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(gitBin, args...)
		cmd.Dir, cmd.Env = root, env
		out, err := (&client{name: "git " + args[0], cmd: cmd}).run(t)
		if err != nil {
			t.Fatalf("git %s through credproxy: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	clone := filepath.Join(root, "clone")
	agentGit("clone", "-q", "https://github.com/credproxy/demo.git", clone)
	if got := strings.TrimSpace(fixture("-C", clone, "rev-parse", "HEAD")); got != first {
		t.Errorf("git clone: HEAD is %s; expected the served commit %s", got, first)
	}

	writeFile(t, filepath.Join(src, "README"), "two\n")
	fixture("-C", src, "commit", "-q", "-am", "two")
	fixture("-C", src, "push", "-q", bare, "main")
	second := strings.TrimSpace(fixture("-C", src, "rev-parse", "HEAD"))
	agentGit("-C", clone, "fetch", "-q", "origin")
	if got := strings.TrimSpace(fixture("-C", clone, "rev-parse", "origin/main")); got != second {
		t.Errorf("git fetch: origin/main is %s; expected the new commit %s", got, second)
	}

	var refs, packs int
	for _, r := range u.seen() {
		switch {
		case r.Method == "GET" && strings.HasSuffix(r.Path, "/info/refs"):
			refs++
		case r.Method == "POST" && strings.HasSuffix(r.Path, "/git-upload-pack"):
			packs++
		}
		if r.Header.Get("Authorization") != want {
			t.Errorf("github.com saw %s %s with Authorization %q; expected Basic x-access-token:<key> injected", r.Method, r.Path, r.Header.Get("Authorization"))
		}
	}
	if refs < 2 || packs < 2 {
		t.Errorf("github.com saw %d info/refs GETs and %d git-upload-pack POSTs; expected at least 2 of each (clone and fetch)", refs, packs)
	}
}

// gitHTTPBackend finds git's http-backend CGI program.
func gitHTTPBackend(t *testing.T, gitBin string) string {
	t.Helper()
	execPath := strings.TrimSpace(runGit(t, gitBin, "--exec-path"))
	p := filepath.Join(execPath, "git-http-backend")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("git http-backend is required (Debian's git package has it): %v", err)
	}
	return p
}

// runGit runs git for the fixture (not the agent): no proxy, a throwaway
// identity and HOME.
func runGit(t *testing.T, gitBin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(gitBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com", "GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
