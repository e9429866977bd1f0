package rules

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	testRSAOnce sync.Once
	testRSA     *rsa.PrivateKey
)

// writeKeys puts, in dir, an RSA key as PKCS#1 (rsa1.pem) and PKCS#8
// (rsa8.pem), an EC key (ec.pem) and a file that is not PEM (junk.pem).
// Keys are made at test time: no private key is committed.
func writeKeys(t *testing.T, dir string) {
	t.Helper()
	testRSAOnce.Do(func() {
		var err error
		if testRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	p8, _ := x509.MarshalPKCS8PrivateKey(testRSA)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec8, _ := x509.MarshalPKCS8PrivateKey(ec)
	for name, data := range map[string][]byte{
		"rsa1.pem": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(testRSA)}),
		"rsa8.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		"ec.pem":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ec8}),
		"junk.pem": []byte("not a key at all\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func parseIn(t *testing.T, dir, src string) (*Config, error) {
	t.Helper()
	writeKeys(t, dir)
	return Parse(filepath.Join(dir, "rules.yaml"), []byte(src))
}

const githubAppConfig = `sources:
  github:
    type: github_app
    appID: 123456
    installationID: 98765432
    privateKeyFile: rsa1.pem
    permissions: {contents: read, pull_requests: write}
    repositories: [widgets, gadgets]
credentials:
  gh: {source: github, ttl: 30m}
rules:
  - name: gh
    hosts: [api.github.com]
    credential: gh
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

func TestGitHubAppSourceLoads(t *testing.T) {
	dir := t.TempDir()
	c, err := parseIn(t, dir, githubAppConfig)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sources["github"]
	want := &GitHubApp{AppID: 123456, InstallationID: 98765432, PrivateKeyFile: filepath.Join(dir, "rsa1.pem"),
		BaseURL: DefaultGitHubBaseURL, Permissions: map[string]string{"contents": "read", "pull_requests": "write"},
		Repositories: []string{"widgets", "gadgets"}, Timeout: DefaultGitHubTimeout}
	if s.Type != SourceGitHubApp || s.Line != 2 || !reflect.DeepEqual(s.GitHubApp, want) {
		t.Errorf("source = %+v with %+v, want type github_app at line 2 with %+v", s, s.GitHubApp, want)
	}
	if cr := c.Credentials["gh"]; cr.Source != "github" || cr.Path != "" {
		t.Errorf("credential = %+v", cr)
	}
}

func TestGitHubAppSourceOptions(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ghes-ca.pem"), []byte("-"), 0o600)
	src := strings.Replace(githubAppConfig, "    privateKeyFile: rsa1.pem\n",
		"    privateKeyFile: rsa8.pem\n    baseURL: https://ghe.example.com/api/v3/\n    caFile: ghes-ca.pem\n    timeout: 3s\n", 1)
	c, err := parseIn(t, dir, src)
	if err != nil {
		t.Fatal(err)
	}
	g := c.Sources["github"].GitHubApp
	if g.BaseURL != "https://ghe.example.com/api/v3" || g.Timeout != 3*time.Second || c.Sources["github"].CAFile != filepath.Join(dir, "ghes-ca.pem") {
		t.Errorf("got %+v caFile %q", g, c.Sources["github"].CAFile)
	}
	// A loopback test server may speak plain http.
	if _, err := parseIn(t, dir, strings.Replace(src, "https://ghe.example.com/api/v3/", "http://127.0.0.1:8080", 1)); err != nil {
		t.Errorf("http on loopback: %v", err)
	}
}

func TestGitHubAppSourceErrors(t *testing.T) {
	tests := []struct {
		name, from, to, want string
	}{
		{"no appID", "    appID: 123456\n", "", "2: sources.github.appID: required for type github_app"},
		{"zero appID", "appID: 123456", "appID: 0", "4: sources.github.appID: must be a positive integer, not 0"},
		{"appID not a number", "appID: 123456", "appID: my-app", "4: sources.github.appID: expected an integer"},
		{"negative installationID", "installationID: 98765432", "installationID: -1", "5: sources.github.installationID: must be a positive integer, not -1"},
		{"no key", "    privateKeyFile: rsa1.pem\n", "", "2: sources.github.privateKeyFile: required for type github_app"},
		{"missing key file", "rsa1.pem", "nope.pem", "6: sources.github.privateKeyFile: cannot read "},
		{"key not PEM", "rsa1.pem", "junk.pem", "6: sources.github.privateKeyFile: "},
		{"EC key", "rsa1.pem", "ec.pem", "6: sources.github.privateKeyFile: "},
		{"http remote", "privateKeyFile: rsa1.pem", "privateKeyFile: rsa1.pem\n    baseURL: http://ghe.example.com",
			`7: sources.github.baseURL: must be https:// (http:// only on loopback), not "http://ghe.example.com"`},
		{"baseURL with credentials", "privateKeyFile: rsa1.pem", "privateKeyFile: rsa1.pem\n    baseURL: https://u:p@ghe.example.com",
			"7: sources.github.baseURL: want a URL with no credentials"},
		{"bad permission level", "contents: read", "contents: maybe", `7: sources.github.permissions.contents: must be read, write or admin, not "maybe"`},
		{"bad permission name", "contents: read", "Contents!: read", `7: sources.github.permissions.Contents!: bad permission name`},
		{"owner/repo", "[widgets, gadgets]", "[acme/widgets]", `8: sources.github.repositories[0]: bad repository name "acme/widgets"`},
		{"zero timeout", "    privateKeyFile: rsa1.pem\n", "    privateKeyFile: rsa1.pem\n    timeout: 0s\n", "7: sources.github.timeout: must be positive, not 0s"},
		{"vault key", "    privateKeyFile: rsa1.pem\n", "    privateKeyFile: rsa1.pem\n    address: http://v\n", "7: sources.github.address: unknown key"},
		{"credential with path", "{source: github, ttl: 30m}", "{source: github, path: x, ttl: 30m}",
			"10: credentials.gh.path: does not apply to a github_app source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			src := strings.Replace(githubAppConfig, tt.from, tt.to, 1)
			if src == githubAppConfig {
				t.Fatalf("%q is not in the config", tt.from)
			}
			_, err := parseIn(t, dir, src)
			path := filepath.Join(dir, "rules.yaml")
			if err == nil || !hasLinePrefix(err.Error(), path+":"+tt.want) {
				t.Fatalf("got %v\nwant a line starting %q", err, path+":"+tt.want)
			}
			if strings.Contains(err.Error(), "BEGIN") || strings.Contains(err.Error(), "not a key at all") {
				t.Errorf("the error quotes the key file: %v", err)
			}
		})
	}
}

// The key check says what is wrong with the key, not only that it is.
func TestGitHubAppKeyMessages(t *testing.T) {
	dir := t.TempDir()
	writeKeys(t, dir)
	for file, want := range map[string]string{
		"ec.pem":   "holds an ECDSA key; GitHub App keys are RSA",
		"junk.pem": "is not PEM",
		"rsa8.pem": "",
		"rsa1.pem": "",
	} {
		err := checkRSAKeyFile(filepath.Join(dir, file))
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", file, err, want)
		}
	}
}

// The README's GitHub App example loads, and its rules send the token as a
// Bearer to the REST API and as Basic x-access-token to git.
func TestREADMEGitHubAppExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "<!-- github-app-example")
	if !ok {
		t.Fatal("README.md has no github-app-example marker")
	}
	_, block, _ := strings.Cut(after, "```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	dir := t.TempDir()
	writeKeys(t, dir)
	os.Rename(filepath.Join(dir, "rsa1.pem"), filepath.Join(dir, "github-app.pem"))
	c, err := Parse(filepath.Join(dir, "rules.yaml"), []byte(block))
	if err != nil {
		t.Fatalf("the README's example: %v", err)
	}
	for _, tc := range []struct{ host, path, rule, want string }{
		{"api.github.com", "/repos/acme/widgets/issues", "github-api", "Bearer ghs_example0123456789"},
		{"github.com", "/acme/widgets.git/info/refs", "github-git", "Basic eC1hY2Nlc3MtdG9rZW46Z2hzX2V4YW1wbGUwMTIzNDU2Nzg5"},
	} {
		d, _ := ParseDest(tc.host, 443)
		r, err := c.Match(d, "GET", tc.path, "agent")
		if err != nil || r == nil || r.Name != tc.rule {
			t.Fatalf("%s%s matched %v (%v), want rule %s", tc.host, tc.path, r, err, tc.rule)
		}
		req, _ := http.NewRequest("GET", "https://"+tc.host+tc.path, nil)
		if err := r.Apply(req, Values{Value: "ghs_example0123456789"}); err != nil || req.Header.Get("Authorization") != tc.want {
			t.Errorf("%s: Authorization %q (%v), want %q", tc.rule, req.Header.Get("Authorization"), err, tc.want)
		}
	}
}
