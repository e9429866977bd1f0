package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wantErrorLines fails unless err has a line starting with each of want.
func wantErrorLines(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want lines starting %q", want)
	}
	for _, w := range want {
		if !hasLinePrefix(err.Error(), w) {
			t.Errorf("no error line starting %q; got:\n%v", w, err)
		}
	}
}

func TestAllowPlaintext(t *testing.T) {
	_, err := Load("testdata/bad_plaintext.yaml")
	const f = "testdata/bad_plaintext.yaml:"
	wantErrorLines(t, err,
		f+`13: rules[1].allowPlaintext: only for loopback hosts (localhost, 127.0.0.0/8, ::1): hosts[1] "api.example.com" is not one`,
		f+`18: rules[2].allowPlaintext: only for loopback hosts (localhost, 127.0.0.0/8, ::1): hosts[0] "*.localhost" is not one`,
		f+`23: rules[3].allowPlaintext: only for loopback hosts (localhost, 127.0.0.0/8, ::1): hosts[0] "10.0.0.1" is not one`,
		f+`23: rules[3].allowPlaintext: only for loopback hosts (localhost, 127.0.0.0/8, ::1): hosts[1] "[::ffff:10.0.0.1]" is not one`,
	)
	if strings.Contains(err.Error(), "rules[0]") {
		t.Errorf("loopback-only rule refused: %v", err)
	}

	c, err := Parse("t.yaml", []byte(`
credentials:
  c: {source: file, file: testdata/gh-token}
rules:
  - {name: local, hosts: [localhost:8080, 127.0.0.1, "[::1]"], allowPlaintext: true, credential: c,
     inject: {header: Authorization, value: "{{ .Value }}"}}
  - {name: remote, hosts: [api.example.com], credential: c, inject: {header: Authorization, value: "{{ .Value }}"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Rules[0].AllowPlaintext || c.Rules[1].AllowPlaintext {
		t.Errorf("AllowPlaintext = %v, %v; want true, false (the default)", c.Rules[0].AllowPlaintext, c.Rules[1].AllowPlaintext)
	}
	_, err = Parse("t.yaml", []byte("rules:\n  - allowPlaintext: sometimes\n"))
	wantErrorLines(t, err, "t.yaml:2: rules[0].allowPlaintext: expected true or false")
}

func TestAdmin(t *testing.T) {
	dir := absTestdata(t)
	c, err := Parse(filepath.Join(dir, "c.yaml"), []byte("admin: {listen: \"127.0.0.1:9999\", tokenFile: admin-token}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin != "127.0.0.1:9999" || c.AdminTokenFile != filepath.Join(dir, "admin-token") {
		t.Errorf("Admin, AdminTokenFile = %q, %q; want 127.0.0.1:9999 and testdata/admin-token", c.Admin, c.AdminTokenFile)
	}
	if tok, err := c.AdminToken(); err != nil || tok != "0123456789abcdef-admin-token" {
		t.Errorf("AdminToken() = %q, %v; want the file's token, trimmed", tok, err)
	}

	// The scalar form stays valid; with no tokenFile there is no token.
	c, err = Parse("c.yaml", []byte("admin: 127.0.0.1:9998\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := c.AdminToken(); c.Admin != "127.0.0.1:9998" || c.AdminTokenFile != "" || tok != "" || err != nil {
		t.Errorf("scalar admin: Admin %q, AdminTokenFile %q, AdminToken() %q, %v; want the address and no token",
			c.Admin, c.AdminTokenFile, tok, err)
	}
	c, err = Parse("c.yaml", []byte("admin: {tokenFile: testdata/admin-token}\n"))
	if err != nil || c.Admin != DefaultAdmin {
		t.Errorf("admin without listen: %v, Admin %q; want %s", err, c.Admin, DefaultAdmin)
	}

	// A token that shrinks after load is refused at use too.
	tmp := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tmp, []byte("0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Parse("c.yaml", []byte("admin: {tokenFile: "+tmp+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := c.AdminToken(); err == nil || tok != "" || strings.Contains(err.Error(), "short") {
		t.Errorf("AdminToken() of a 5-byte token = %q, %v; want an error that does not quote it", tok, err)
	}

	_, err = Load("testdata/bad_admin_token.yaml")
	wantErrorLines(t, err, "testdata/bad_admin_token.yaml:3: admin.tokenFile: token is 5 bytes after trimming whitespace; want at least 16")
	if strings.Contains(err.Error(), "short\n") || strings.Contains(err.Error(), `"short"`) {
		t.Errorf("error quotes the token: %v", err)
	}
	_, err = Load("testdata/bad_admin.yaml")
	wantErrorLines(t, err,
		"testdata/bad_admin.yaml:2: admin.listen: want host:port",
		"testdata/bad_admin.yaml:3: admin.tokenFile: cannot read "+filepath.Join(dir, "no-such-admin-token")+": no such file or directory",
		"testdata/bad_admin.yaml:4: admin.user: unknown key (want one of: listen, tokenFile)",
	)
	for src, want := range map[string]string{
		"admin: [a]\n":                   "c.yaml:1: admin: expected an address or a mapping with listen and tokenFile",
		"admin:\n  tokenFile: \"\"\n":    "c.yaml:2: admin.tokenFile: empty path",
		"admin: {tokenFile: testdata}\n": "c.yaml:1: admin.tokenFile: cannot read " + dir + ": is a directory",
	} {
		_, err := Parse("c.yaml", []byte(src))
		wantErrorLines(t, err, want)
	}
}

func TestLimits(t *testing.T) {
	_, err := Load("testdata/bad_limits.yaml")
	const f = "testdata/bad_limits.yaml:"
	wantErrorLines(t, err,
		f+"2: upstream.dialTimeout: must be positive, not 0s",
		f+"3: upstream.responseHeaderTimeout: must be at most 1h0m0s, not 48h0m0s",
		f+"4: upstream.streamWindow: must be between 65535 and 16777216, not 1024",
		f+"6: limits.maxHeaderBytes: must be between 4096 and 1048576, not 100",
		f+"7: limits.headerTimeout: must be positive, not -1s",
		f+`8: limits.idleTimeout: bad duration "forever"`,
		f+"9: limits.maxConnections: must be between 1 and 1048576, not 0",
		f+"10: limits.maxInflight: expected an integer",
		f+"11: limits.maxPurposeBytes: must be between 1 and 4096, not 100000",
		f+"12: limits.maxBodyBytes: unknown key",
	)
	// The bounds themselves are accepted.
	c, err := Parse("c.yaml", []byte(`
upstream: {dialTimeout: 5m, responseHeaderTimeout: 1h, streamWindow: 65535}
limits: {maxHeaderBytes: 1048576, headerTimeout: 10m, idleTimeout: 24h, maxConnections: 1, maxInflight: 1048576, maxPurposeBytes: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{MaxHeaderBytes: 1 << 20, HeaderTimeout: 10 * time.Minute, IdleTimeout: 24 * time.Hour,
		MaxConnections: 1, MaxInflight: 1 << 20, MaxPurposeBytes: 1}
	if c.Limits != want || c.Upstream.StreamWindow != 65535 || c.Upstream.DialTimeout != 5*time.Minute {
		t.Errorf("Limits = %+v, Upstream = %+v; want %+v and the upstream bounds", c.Limits, c.Upstream, want)
	}
}

func TestShortCredential(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_SHORT", "sk-1234")
	t.Setenv("CREDPROXY_TEST_EMPTY", "")
	t.Setenv("CREDPROXY_TEST_LONG", "sk-12345")
	_, err := Load("testdata/bad_short_credential.yaml")
	const f = "testdata/bad_short_credential.yaml:"
	wantErrorLines(t, err,
		f+`3: credentials.envkey.env: credential "envkey": the value of CREDPROXY_TEST_SHORT is 7 bytes, too short to mask safely in responses (want at least 8)`,
		f+`4: credentials.filekey.file: credential "filekey": the value in `,
	)
	for _, leak := range []string{"sk-1234", "abc"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("error quotes the value %q: %v", leak, err)
		}
	}
	if strings.Contains(err.Error(), "longkey") || strings.Contains(err.Error(), "emptyenv") {
		t.Errorf("8 bytes or an empty value refused: %v", err)
	}
	// An empty value is not there yet: a warning, as for an unset one.
	t.Setenv("CREDPROXY_TEST_SHORT", "sk-12345678")
	c, err := Parse("c.yaml", []byte("credentials:\n  e: {source: env, env: CREDPROXY_TEST_EMPTY}\n  f: {source: file, file: "+
		filepath.Join(absTestdata(t), "admin-token")+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "CREDPROXY_TEST_EMPTY is empty") {
		t.Errorf("Warnings = %q, want one saying CREDPROXY_TEST_EMPTY is empty", c.Warnings)
	}
}
