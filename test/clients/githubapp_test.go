package clients

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/githubtest"
)

// TestGitCloneWithGitHubAppToken: git clones through credproxy, which
// mints a GitHub App installation token from a fake GitHub (the app JWT
// verified with go-jose) and sends it as Basic x-access-token:TOKEN. The
// repository host accepts only tokens the fake issued and still considers
// live; git itself never holds one.
func TestGitCloneWithGitHubAppToken(t *testing.T) {
	gitBin := tool(t, "git")
	backend := gitHTTPBackend(t, gitBin)
	root := t.TempDir()
	src := filepath.Join(root, "src")
	bare := filepath.Join(root, "srv", "acme", "widgets.git")
	fixture := func(args ...string) string { return runGit(t, gitBin, args...) }
	fixture("init", "-q", "-b", "main", src)
	writeFile(t, filepath.Join(src, "README"), "app\n")
	fixture("-C", src, "add", "README")
	fixture("-C", src, "commit", "-q", "-m", "app")
	fixture("clone", "-q", "--bare", src, bare)
	head := strings.TrimSpace(fixture("-C", src, "rev-parse", "HEAD"))

	key := githubtest.Key(t)
	gh := githubtest.Start(t, githubtest.RealClock{}, 4242, 777, key, time.Hour)
	keyFile := githubtest.WriteKey(t, t.TempDir(), "github-app.pem", key, true)
	cgiH := &cgi.Handler{Path: backend, Root: "/", Env: []string{"GIT_PROJECT_ROOT=" + filepath.Join(root, "srv"), "GIT_HTTP_EXPORT_ALL=1"}}
	u := startUpstream(t, "github.com", apiCA, func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "x-access-token" || !gh.Live(pass) {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		cgiH.ServeHTTP(w, r)
	})
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: fmt.Sprintf(`sources:
  github-app: {type: github_app, appID: 4242, installationID: 777, privateKeyFile: %s, baseURL: %q, caFile: %s,
    permissions: {contents: read}, repositories: [widgets]}
credentials:
  github: {source: github-app}
rules:
  - name: github-git
    hosts: [github.com]
    paths: ["/*/*/info/refs", "/*/*/git-upload-pack"]
    credential: github
    inject: {header: Authorization, value: '{{ basic "x-access-token" .Value }}'}
`, keyFile, gh.URL, gh.CAFile)})

	cmd := exec.Command(gitBin, "clone", "-q", "https://github.com/acme/widgets.git", filepath.Join(root, "clone"))
	cmd.Dir, cmd.Env = root, p.agentEnv(t, "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
	if out, err := (&client{name: "git clone", cmd: cmd}).run(t); err != nil {
		t.Fatalf("git clone through credproxy: %v\n%s\ncredproxy stderr:\n%s", err, out, tail(p.errb.String()))
	}
	if got := strings.TrimSpace(fixture("-C", filepath.Join(root, "clone"), "rev-parse", "HEAD")); got != head {
		t.Errorf("git clone: HEAD is %s; expected the served commit %s", got, head)
	}
	toks := gh.Tokens()
	if len(toks) != 1 || len(gh.Rejections()) != 0 {
		t.Fatalf("the fake GitHub issued %d tokens (rejections %v); expected one for the whole clone", len(toks), gh.Rejections())
	}
	if n := len(u.seen()); n < 2 {
		t.Errorf("github.com saw %d requests; expected info/refs and git-upload-pack", n)
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+toks[0].Value))
	for _, r := range u.seen() {
		if got := r.Header.Get("Authorization"); got != want {
			t.Errorf("github.com saw %s %s with Authorization %.20q…; expected the minted token as Basic x-access-token", r.Method, r.Path, got)
		}
	}
	for name, text := range map[string]string{"credproxy stdout (audit)": p.out.String(), "credproxy stderr (logs)": p.errb.String()} {
		for _, s := range append(gh.JWTs(), toks[0].Value) {
			if strings.Contains(text, s) {
				t.Errorf("%s holds the app JWT or the installation token", name)
			}
		}
	}
}
