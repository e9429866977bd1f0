package rules

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// absTestdata is the absolute testdata directory, against which relative
// paths in the files must resolve.
func absTestdata(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustLoad(t *testing.T, path string) *Config {
	t.Helper()
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	return c
}

func TestLoadFull(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_OPENAI", "sk-test-openai")
	dir := absTestdata(t)
	c := mustLoad(t, "testdata/full.yaml")

	if len(c.Warnings) != 0 {
		t.Errorf("Warnings = %q, want none", c.Warnings)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Path", c.Path, "testdata/full.yaml"},
		{"Listen", c.Listen, "127.0.0.1:4128"},
		{"Admin", c.Admin, "127.0.0.1:9465"},
		{"Identity", c.Identity, "my-agent"},
		{"CertCacheSize", c.CertCacheSize, 64},
		{"Unmatched", c.Unmatched, UnmatchedDeny},
		{"CA", c.CA, CA{Cert: filepath.Join(dir, "ca/cert.pem"), Key: "/etc/credproxy/key.pem"}},
		{"AdminTokenFile", c.AdminTokenFile, filepath.Join(dir, "admin-token")},
		{"Upstream", c.Upstream, Upstream{CAFiles: []string{filepath.Join(dir, "extra-root.pem")}, HTTP2: false,
			DialTimeout: 3 * time.Second, ResponseHeaderTimeout: 2 * time.Minute, StreamWindow: 131072}},
		{"Limits", c.Limits, Limits{MaxHeaderBytes: 8192, HeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			MaxConnections: 100, MaxInflight: 50, MaxPurposeBytes: 64}},
		{"Audit", c.Audit.File, filepath.Join(dir, "audit.log")},
		{"Leases", c.Leases, Policy{20 * time.Minute, 3 * time.Hour, false, 4 * time.Minute, 11 * time.Minute}},
		{"sources.vault", *c.Sources["vault"], Source{Name: "vault", Type: "vault", Address: "http://127.0.0.1:8200",
			Namespace: "team-a", CAFile: filepath.Join(dir, "vault-ca.pem"), Line: 13,
			Auth: SourceAuth{Method: "token", TokenFile: filepath.Join(dir, "vault-token"), Mount: "token"}}},
		{"sources.k8s.auth", c.Sources["k8s"].Auth, SourceAuth{Method: "kubernetes", Role: "credproxy",
			JWTFile: DefaultJWTFile, Mount: "kubernetes"}},
		{"sources.ar.auth", c.Sources["ar"].Auth, SourceAuth{Method: "approle", RoleID: "role-1",
			SecretIDFile: filepath.Join(dir, "secret-id"), Mount: "my-approle"}},
		{"credentials.openai", *c.Credentials["openai"], Credential{Name: "openai", Source: "env",
			Env: "CREDPROXY_TEST_OPENAI", Scope: ScopeShared, Line: 28,
			// renewBeforeExpiry 4m is inherited and fits the 5m ttl: kept.
			Policy: Policy{5 * time.Minute, 3 * time.Hour, false, 4 * time.Minute, 11 * time.Minute}}},
		{"credentials.gh.File", c.Credentials["gh"].File, filepath.Join(dir, "gh-token")},
		{"credentials.kv", [2]string{c.Credentials["kv"].Path, c.Credentials["kv"].Field}, [2]string{"secret/data/openai", "api_key"}},
		{"credentials.db.Policy", c.Credentials["db"].Policy, Policy{15 * time.Minute, time.Hour, true, 2 * time.Minute, 5 * time.Minute}},
		{"credentials.db.Scope", c.Credentials["db"].Scope, ScopeIdentity},
		{"len(Rules)", len(c.Rules), 3},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %+v, want %+v", ck.name, ck.got, ck.want)
		}
	}

	r := c.Rules[0]
	want := Rule{Name: "openai", Line: 33, Credential: "openai", Purpose: "chat completions",
		Hosts:   []string{"api.openai.com", "*.openai.azure.com", "127.0.0.1:8443", "[::1]:9000"},
		Paths:   []string{"/v1/", "/repos/*/issues"},
		Methods: []string{"GET", "POST"}, Identities: []string{"agent-a"}, Remove: []string{"X-Api-Key"},
		Inject: Inject{Header: "Authorization", Value: "Bearer {{ .Value }}"}}
	got := Rule{Name: r.Name, Line: r.Line, Credential: r.Credential, Purpose: r.Purpose, Hosts: r.Hosts,
		Paths: r.Paths, Methods: r.Methods, Identities: r.Identities, Remove: r.Remove, Inject: r.Inject}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Rules[0] = %+v\nwant %+v", got, want)
	}
	if q := c.Rules[1].Inject; q.Query != "key" || q.Header != "" {
		t.Errorf("Rules[1].Inject = %+v, want query key", q)
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_OPENAI", "sk-test-openai")
	t.Setenv("VAULT_ADDR", "https://vault.example:8200")
	dir := absTestdata(t)
	c := mustLoad(t, "testdata/minimal.yaml")
	host, _ := os.Hostname()
	checks := []struct {
		name      string
		got, want any
	}{
		{"Listen", c.Listen, "127.0.0.1:3128"},
		{"Admin", c.Admin, "127.0.0.1:9464"},
		{"Identity", c.Identity, host},
		{"CertCacheSize", c.CertCacheSize, 1024},
		{"Unmatched", c.Unmatched, UnmatchedTunnel},
		{"CA", c.CA, CA{Cert: filepath.Join(dir, "credproxy-ca.pem"), Key: filepath.Join(dir, "credproxy-ca-key.pem")}},
		{"AdminTokenFile", c.AdminTokenFile, ""},
		{"Upstream", c.Upstream, Upstream{HTTP2: true, DialTimeout: DefaultDialTimeout,
			ResponseHeaderTimeout: DefaultResponseHeaderTimeout, StreamWindow: DefaultStreamWindow}},
		{"Limits", c.Limits, DefaultLimits},
		{"Audit", c.Audit.File, ""},
		{"Leases", c.Leases, DefaultPolicy},
		{"credential policy", c.Credentials["openai"].Policy, DefaultPolicy},
		{"credential scope", c.Credentials["openai"].Scope, ScopeShared},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %+v, want %+v", ck.name, ck.got, ck.want)
		}
	}
}

func TestParseDefaultsInYAML(t *testing.T) {
	t.Setenv("VAULT_ADDR", "https://vault.example:8200")
	t.Setenv("CREDPROXY_TEST_X", "x-test-value")
	const src = `
sources:
  v: {type: vault, auth: {method: approle, roleID: r, secretIDFile: /s}}
  k: {type: vault, address: http://k:8200, auth: {method: kubernetes, role: r}}
credentials:
  short: {source: env, env: CREDPROXY_TEST_X, ttl: 3m}
`
	c, err := Parse("/etc/credproxy/config.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Sources["v"].Address; got != "https://vault.example:8200" {
		t.Errorf("address = %q, want $VAULT_ADDR", got)
	}
	if got := c.Sources["v"].Auth.Mount; got != "approle" {
		t.Errorf("approle mount = %q, want approle", got)
	}
	if got := c.Sources["k"].Auth; got.Mount != "kubernetes" || got.JWTFile != DefaultJWTFile {
		t.Errorf("kubernetes auth = %+v, want mount kubernetes and the service account token", got)
	}
	// ttl 3m under the default renewBeforeExpiry 5m: renew at two thirds.
	if got := c.Credentials["short"].Policy.RenewBeforeExpiry; got != time.Minute {
		t.Errorf("inherited renewBeforeExpiry = %v, want 1m0s (ttl/3)", got)
	}
	if got := c.CA.Cert; got != "/etc/credproxy/credproxy-ca.pem" {
		t.Errorf("CA.Cert = %q, want it next to the config", got)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{"", "# nothing\n", "{}"} {
		c, err := Parse("empty.yaml", []byte(src))
		if err != nil {
			t.Errorf("Parse(%q): %v", src, err)
			continue
		}
		if len(c.Rules) != 0 || c.Listen != DefaultListen {
			t.Errorf("Parse(%q) = %d rules, listen %q; want defaults", src, len(c.Rules), c.Listen)
		}
		if r, err := c.Match(Dest{"a.example.com", 443}, "GET", "/", ""); r != nil || err != nil || c.Intercepts(Dest{"a", 443}) {
			t.Errorf("Parse(%q): empty config matched something", src)
		}
	}
}

func TestLoadWarnings(t *testing.T) {
	dir := absTestdata(t)
	c := mustLoad(t, "testdata/warnings.yaml")
	want := []string{
		`testdata/warnings.yaml:2: credentials.fromenv.env: credential "fromenv": environment variable CREDPROXY_TEST_SURELY_UNSET is not set`,
		`testdata/warnings.yaml:3: credentials.fromfile.file: credential "fromfile": cannot read file ` +
			filepath.Join(dir, "no-such-token") + `: no such file or directory`,
		`testdata/warnings.yaml:4: credentials.dir.file: credential "dir": cannot read file ` + dir + `: is a directory`,
	}
	if !reflect.DeepEqual(c.Warnings, want) {
		t.Errorf("Warnings =\n%s\nwant\n%s", strings.Join(c.Warnings, "\n"), strings.Join(want, "\n"))
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		file string
		want []string // each must appear as a line of the error
	}{
		{"bad_unknown_key.yaml", []string{"9: rules[0].inject.valeu: unknown key (want one of: header, query, value)",
			"7: rules[0].inject.value: required"}},
		{"bad_duration.yaml", []string{`3: leases.maxTTL: bad duration "2 hours"`}},
		{"bad_renew.yaml", []string{"6: credentials.db.renewBeforeExpiry: renewBeforeExpiry 10m0s must be shorter than ttl 10m0s"}},
		{"bad_maxttl.yaml", []string{"6: credentials.db.ttl: ttl 1h30m0s exceeds maxTTL 1h0m0s (from leases)"}},
		{"bad_rule_credential.yaml", []string{`6: rules[0].credential: unknown credential "nope"`}},
		{"bad_source.yaml", []string{`5: credentials.c.source: unknown source "valut": want env, file, vault`}},
		{"bad_template.yaml", []string{"9: rules[0].inject.value: bad template: "}},
		{"bad_header_and_query.yaml", []string{"9: rules[0].inject.query: set header or query, not both"}},
		{"bad_host_pattern.yaml", []string{`7: rules[0].hosts[1]: bad host pattern "*foo.com": '*' is only allowed`}},
		{"bad_duplicate_rule.yaml", []string{`8: rules[1].name: duplicate rule name "r" (first at line 4)`}},
		{"bad_unmatched.yaml", []string{`2: unmatched: must be tunnel or deny, not "allow"`}},
		{"bad_approle.yaml", []string{"5: sources.vault.auth.roleID: required for method approle"}},
		{"bad_syntax.yaml", []string{"3: bad YAML: found character that cannot start any token"}},
		{"bad_many.yaml", []string{
			"2: certCacheSize: must be greater than 0, not 0",
			"3: upstream.caFiles[0]: stat ",
			`5: sources.env: "env" is a built-in source`,
			`5: sources.env.type: must be vault, oauth2, github_app or exec, not "consul"`,
			`5: sources.env.address: want an http:// or https:// URL, not "not a url"`,
			"7: credentials.a.env: required for source env",
			"8: credentials.b.file: required for source file",
			"8: credentials.b.env: only applies to source env",
			`9: credentials.c.scope: must be shared, identity or task, not "global"`,
			"11: rules[0].name: required",
			"11: rules[0].hosts: required: at least one host",
			`13: rules[0].inject.header: bad header name "Bad Header"`,
			`15: rules[1].hosts[0]: bad host pattern "*": '*' is only allowed as a whole first label`,
			`15: rules[1].hosts[1]: bad host pattern "a.*.com": '*' is only allowed`,
			`15: rules[1].hosts[2]: bad host pattern "": empty host`,
			`15: rules[1].hosts[3]: bad host pattern "[::1": missing ']'`,
			`15: rules[1].hosts[4]: bad host pattern "*.10.0.0.1": a wildcard needs a host name`,
			`16: rules[1].paths[0]: bad path "v1": must start with '/'`,
			`16: rules[1].paths[1]: bad path "/a/[*": bad glob`,
			`17: rules[1].methods[0]: bad method "GE T"`,
			"19: rules[1].inject.header: cannot inject Host",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want errors", path)
			}
			var errs ConfigErrors
			if !errors.As(err, &errs) {
				t.Fatalf("Load(%s) error is %T, want ConfigErrors: %v", path, err, err)
			}
			for _, w := range tt.want {
				if !hasLinePrefix(err.Error(), path+":"+w) {
					t.Errorf("Load(%s): no error line starting %q; got:\n%v", path, path+":"+w, err)
				}
			}
			for i := 1; i < len(errs); i++ {
				if errs[i].Line < errs[i-1].Line {
					t.Errorf("errors not in line order: %d after %d", errs[i].Line, errs[i-1].Line)
				}
			}
		})
	}
}

func hasLinePrefix(text, prefix string) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

func TestParseErrorsInline(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	tests := []struct {
		name, src, want string
	}{
		{"unknown top-level key", "listn: :3128\n", "1: listn: unknown key"},
		{"duplicate key", "listen: a:1\nlisten: b:2\n", "2: listen: duplicate key (first at line 1)"},
		{"bad listen", "listen: localhost\n", "1: listen: want host:port"},
		{"negative certCacheSize", "certCacheSize: -1\n", "1: certCacheSize: must be greater than 0"},
		{"certCacheSize not int", "certCacheSize: many\n", "1: certCacheSize: expected an integer"},
		{"autoRenew not bool", "leases: {autoRenew: often}\n", "1: leases.autoRenew: expected true or false"},
		{"zero ttl", "leases:\n  defaultTTL: 0s\n", "2: leases.defaultTTL: must be positive, not 0s"},
		{"leases renew", "leases:\n  defaultTTL: 5m\n  renewBeforeExpiry: 6m\n", "3: leases.renewBeforeExpiry: renewBeforeExpiry 6m0s must be shorter than defaultTTL 5m0s"},
		{"credential maxTTL under leases ttl", "credentials:\n  c:\n    source: env\n    env: X\n    maxTTL: 10m\n",
			"5: credentials.c.maxTTL: ttl 15m0s (from leases) exceeds maxTTL 10m0s"},
		{"no vault address", "sources:\n  v: {type: vault}\n", "2: sources.v.address: required (or set VAULT_ADDR)"},
		{"bad auth method", "sources:\n  v:\n    type: vault\n    address: http://v\n    auth: {method: ldap}\n",
			`5: sources.v.auth.method: must be token, approle or kubernetes, not "ldap"`},
		{"kubernetes without role", "sources:\n  v:\n    type: vault\n    address: http://v\n    auth:\n      method: kubernetes\n",
			"5: sources.v.auth.role: required for method kubernetes"},
		{"store without path", "sources:\n  v: {type: vault, address: http://v}\ncredentials:\n  c: {source: v}\n",
			"4: credentials.c.path: required for source v"},
		{"no source", "credentials:\n  c: {env: X}\n", "2: credentials.c.source: required: want env, file"},
		{"field on env", "credentials:\n  c: {source: env, env: X,\n    field: f}\n",
			"3: credentials.c.field: only applies to a store source"},
		{"empty caFiles entry", "upstream:\n  caFiles:\n    - \"\"\n", "3: upstream.caFiles[0]: empty path"},
		{"hosts not a list", "rules:\n  - name: r\n    hosts: a.example.com\n", "3: rules[0].hosts: expected a list"},
		{"unquoted template", "rules:\n  - name: r\n    inject: {value: {{ .Value }}}\n", "3: rules[0].inject.value: expected a single value"},
		{"rules not a list", "rules: {}\n", "1: rules: expected a list"},
		// Found by FuzzParse: these had no line.
		{"document not a mapping", "\n0\n", "2: expected a mapping"},
		{"end of stream", "listen: a:1\nadmin: \"", "2: bad YAML: found unexpected end of stream"},
		{"bad UTF-8", "listen: a:1\nadmin: \xff\n", "2: bad YAML: invalid"},
		{"control byte", "listen: a:1\n\nadmin: \x01\n", "3: bad YAML: control characters"},
		{"no inject", "credentials:\n  c: {source: env, env: X}\nrules:\n  - name: r\n    hosts: [a]\n    credential: c\n",
			"4: rules[0].inject: needs one of header or query"},
		{"no value", "rules:\n  - inject:\n      query: key\n", "2: rules[0].inject.value: required"},
		{"bad remove", "rules:\n  - remove: [\"X Key\"]\n", `2: rules[0].remove[0]: bad header name "X Key"`},
		{"undefined function", "rules:\n  - inject:\n      value: '{{ bearer .Value }}'\n",
			`3: rules[0].inject.value: bad template: template: :1: function "bearer" not defined`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.src))
			if err == nil || !hasLinePrefix(err.Error(), "c.yaml:"+tt.want) {
				t.Errorf("Parse: got error\n%v\nwant a line starting %q", err, "c.yaml:"+tt.want)
			}
		})
	}
}

func TestConfigErrorFormat(t *testing.T) {
	es := ConfigErrors{
		{File: "a.yaml", Line: 3, Field: "rules[0].name", Msg: "required"},
		{File: "a.yaml", Line: 7, Msg: "bad YAML: x"},
		{File: "a.yaml", Msg: "no line"},
	}
	want := "a.yaml:3: rules[0].name: required\na.yaml:7: bad YAML: x\na.yaml: no line"
	if es.Error() != want {
		t.Errorf("Error() = %q, want %q", es.Error(), want)
	}
	var one *ConfigError
	if !errors.As(error(es), &one) || one.Line != 3 {
		t.Errorf("errors.As(ConfigErrors, *ConfigError) = %v, want the first error", one)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestUpstreamHTTP2(t *testing.T) {
	for src, want := range map[string]bool{"": true, "upstream: {http2: false}\n": false, "upstream: {http2: true}\n": true} {
		cfg, err := Parse("t.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Upstream.HTTP2 != want {
			t.Errorf("%q: Upstream.HTTP2 = %v, want %v", src, cfg.Upstream.HTTP2, want)
		}
	}
	if _, err := Parse("t.yaml", []byte("upstream: {http2: maybe}\n")); err == nil || !strings.Contains(err.Error(), "t.yaml:1: upstream.http2") {
		t.Errorf("bad http2 value: %v, want an error naming t.yaml:1: upstream.http2", err)
	}
}
