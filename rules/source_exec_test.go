package rules

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeHelper puts an executable script called name into dir.
func writeHelper(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho sk-test-exec-0123456789\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

const execConfig = `sources:
  op:
    type: exec
    command: [./bin/helper, read, "op://vault/item/field"]
    revokeCommand: [./bin/helper, revoke]
    timeout: 3s
    env: {OP_ACCOUNT: my.1password.com, EMPTY: ""}
  sh:
    type: exec
    command: [sh, -c, "echo sk-test-exec-0123456789"]
credentials:
  api: {source: op, ttl: 10m}
  other: {source: sh}
rules:
  - name: api
    hosts: [api.example.com]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

func TestExecSourceLoads(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "bin"), 0o755)
	helper := writeHelper(t, filepath.Join(dir, "bin"), "helper")
	c, err := Parse(filepath.Join(dir, "rules.yaml"), []byte(execConfig))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sources["op"]
	want := &ExecSource{
		Command:       []string{helper, "read", "op://vault/item/field"},
		RevokeCommand: []string{helper, "revoke"},
		Env:           map[string]string{"OP_ACCOUNT": "my.1password.com", "EMPTY": ""},
		Timeout:       3 * time.Second,
		Dir:           dir,
	}
	if s.Type != SourceExec || !reflect.DeepEqual(s.Exec, want) {
		t.Errorf("source op: type %q, %+v; want %+v", s.Type, s.Exec, want)
	}
	// A bare name is left for PATH; the timeout defaults.
	if x := c.Sources["sh"].Exec; x.Command[0] != "sh" || x.Timeout != DefaultExecTimeout || x.Env != nil {
		t.Errorf("source sh: %+v; want command sh as written, the default timeout, no env", x)
	}
	if cr := c.Credentials["api"]; cr.Source != "op" || cr.Policy.DefaultTTL != 10*time.Minute {
		t.Errorf("credential api: %+v", cr)
	}
}

func TestExecSourceErrors(t *testing.T) {
	dir := t.TempDir()
	writeHelper(t, dir, "helper")
	os.WriteFile(filepath.Join(dir, "not-executable"), []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct{ name, src, want string }{
		{"no command", "sources:\n  x:\n    type: exec\n", "rules.yaml:2: sources.x.command: required for type exec"},
		{"command not a list", "sources:\n  x:\n    type: exec\n    command: op read x\n", "rules.yaml:4: sources.x.command: expected a list"},
		{"missing helper", "sources:\n  x:\n    type: exec\n    command: [./nope]\n", "rules.yaml:4: sources.x.command[0]: exec:"},
		{"helper not on PATH", "sources:\n  x:\n    type: exec\n    command: [credproxy-no-such-helper]\n", `executable file not found in $PATH`},
		{"not executable", "sources:\n  x:\n    type: exec\n    command: [./not-executable]\n", "rules.yaml:4: sources.x.command[0]: exec:"},
		{"empty first", "sources:\n  x:\n    type: exec\n    command: ['', a]\n", "rules.yaml:4: sources.x.command[0]: empty"},
		{"zero timeout", "sources:\n  x:\n    type: exec\n    command: [./helper]\n    timeout: 0s\n", "rules.yaml:5: sources.x.timeout: must be positive and at most 5m0s"},
		{"long timeout", "sources:\n  x:\n    type: exec\n    command: [./helper]\n    timeout: 1h\n", "rules.yaml:5: sources.x.timeout: must be positive"},
		{"bad env name", "sources:\n  x:\n    type: exec\n    command: [./helper]\n    env: {\"A=B\": c}\n", "rules.yaml:5: sources.x.env.A=B: bad variable name"},
		{"env not a mapping", "sources:\n  x:\n    type: exec\n    command: [./helper]\n    env: [A]\n", "rules.yaml:5: sources.x.env: expected a mapping"},
		{"unknown key", "sources:\n  x:\n    type: exec\n    command: [./helper]\n    shell: true\n", "rules.yaml:5: sources.x.shell: unknown key (want one of: type, command, revokeCommand, env, timeout)"},
		{"missing revoke helper", "sources:\n  x:\n    type: exec\n    command: [./helper]\n    revokeCommand: [./nope, x]\n", "rules.yaml:5: sources.x.revokeCommand[0]: exec:"},
		{"empty revokeCommand", "sources:\n  x:\n    type: exec\n    command: [./helper]\n    revokeCommand: []\n", "rules.yaml:5: sources.x.revokeCommand: empty"},
		{"credential path", "sources:\n  x:\n    type: exec\n    command: [./helper]\ncredentials:\n  c: {source: x, path: a/b}\n",
			"rules.yaml:6: credentials.c.path: does not apply to an exec source"},
		{"credential env", "sources:\n  x:\n    type: exec\n    command: [./helper]\ncredentials:\n  c: {source: x, env: A}\n",
			"rules.yaml:6: credentials.c.env: does not apply to an exec source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "rules.yaml"), []byte(tc.src))
			var ce ConfigErrors
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want a config error containing %q", err, tc.want)
			}
			if n := strings.Count(err.Error(), "does not apply"); n > 1 {
				t.Errorf("%d errors for one key: %v", n, err)
			}
		})
	}
}

// The README's exec example loads (with a stand-in `op` on PATH, since the
// command must exist at start) and its rule injects the value.
func TestREADMEExecExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "<!-- exec-example")
	if !ok {
		t.Fatal("README.md has no exec-example marker")
	}
	_, block, _ := strings.Cut(after, "```yaml\n")
	block, _, _ = strings.Cut(block, "```")
	bin := t.TempDir()
	writeHelper(t, bin, "op")
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	c, err := Parse(filepath.Join(t.TempDir(), "rules.yaml"), []byte(block))
	if err != nil {
		t.Fatalf("the README's example: %v", err)
	}
	if s := c.Sources["onepassword"]; s == nil || s.Type != SourceExec || s.Exec.Command[0] != "op" {
		t.Fatalf("source onepassword: %+v", s)
	}
	d, _ := ParseDest("api.openai.com", 443)
	r, err := c.Match(d, "POST", "/v1/chat/completions", "agent")
	if err != nil || r == nil || r.Credential != "openai" {
		t.Fatalf("matched %v (%v), want the openai rule", r, err)
	}
	req, _ := http.NewRequest("POST", "https://api.openai.com/v1/chat/completions", nil)
	if err := r.Apply(req, Values{Value: "sk-test-exec-0123456789"}); err != nil || req.Header.Get("Authorization") != "Bearer sk-test-exec-0123456789" {
		t.Errorf("Authorization %q (%v)", req.Header.Get("Authorization"), err)
	}
}
