package rules

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

const clientToken = "agent-b-token-0123456789abcdef"

func TestLoadClients(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_CLIENT_TOKEN", "  "+clientToken+"\n")
	t.Setenv("CREDPROXY_TEST_CLIENT_CRED", "cred-test-value")
	c := mustLoad(t, "testdata/clients.yaml")
	if len(c.Clients) != 2 || !c.RequiresAuth() {
		t.Fatalf("Clients = %v, want 2 and RequiresAuth", c.Clients)
	}
	a, b := c.Clients[0], c.Clients[1]
	if a.Name != "agent-a" || a.TokenFile != filepath.Join(absTestdata(t), "client-a-token") || a.Line != 2 {
		t.Errorf("clients[0] = %+v, want agent-a from client-a-token at line 2", a)
	}
	if b.Name != "agent_b.2" || b.TokenEnv != "CREDPROXY_TEST_CLIENT_TOKEN" || b.Token.Reveal() != clientToken {
		t.Errorf("clients[1] = %+v, want agent_b.2 with the env token trimmed", b)
	}
	// A token never prints, however a Client or the Config is formatted.
	for _, s := range []string{fmt.Sprintf("%v %+v %#v", a, *a, *b), fmt.Sprintf("%+v", c.Clients)} {
		if strings.Contains(s, "token-0123456789") {
			t.Errorf("a formatted client shows its token: %s", s)
		}
	}
	if m, err := Parse("none.yaml", nil); err != nil || m.RequiresAuth() {
		t.Errorf("a config without clients: RequiresAuth = true (%v), want false", err)
	}
}

func TestAuthenticate(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_CLIENT_TOKEN", clientToken)
	t.Setenv("CREDPROXY_TEST_CLIENT_CRED", "cred-test-value")
	c := mustLoad(t, "testdata/clients.yaml")
	tests := []struct {
		user, pass, want string
	}{
		{"agent-a", "agent-a-token-0123456789abcdef", "agent-a"},
		{"agent_b.2", clientToken, "agent_b.2"},
		{"agent-a", clientToken, ""},                        // another client's token
		{"agent_b.2", "agent-a-token-0123456789abcdef", ""}, // and the other way round
		{"agent-a", "agent-a-token-0123456789abcde", ""},    // one byte short
		{"agent-a", "agent-a-token-0123456789abcdefX", ""},  // one byte long
		{"agent-a", "", ""},                                 // no password
		{"nobody", "agent-a-token-0123456789abcdef", ""},    // unknown user
		{"", "", ""},
		{"AGENT-A", "agent-a-token-0123456789abcdef", ""}, // names are exact
		{"agent-a:agent", "a-token-0123456789abcdef", ""}, // no splicing across the colon
	}
	for _, tt := range tests {
		name, ok := c.Authenticate(tt.user, tt.pass)
		if name != tt.want || ok != (tt.want != "") {
			t.Errorf("Authenticate(%q, %q) = %q, %v; want %q, %v", tt.user, tt.pass, name, ok, tt.want, tt.want != "")
		}
	}
	// A hand-built client whose token never loaded matches nothing.
	hand := &Config{Clients: []*Client{{Name: "x"}}}
	if name, ok := hand.Authenticate("x", ""); ok {
		t.Errorf("Authenticate against a client without a token = %q, want no match", name)
	}
}

func TestLoadClientErrors(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_CLIENT_TOKEN", clientToken)
	t.Setenv("CREDPROXY_TEST_SHORT_CLIENT_TOKEN", "0123456789abcde")
	t.Setenv("CREDPROXY_TEST_CLIENT_CRED", "cred-test-value")
	dir := absTestdata(t)
	tests := []struct {
		file string
		want []string
	}{
		{"bad_clients.yaml", []string{
			"4: clients[0].tokenFile: token is 9 bytes after trimming whitespace; want at least 16",
			"6: clients[1].tokenEnv: environment variable CREDPROXY_TEST_UNSET_CLIENT_TOKEN is not set",
			"8: clients[2].tokenFile: cannot read " + filepath.Join(dir, "no-such-client-token") + ": no such file or directory",
			`9: clients[3].name: bad client name "bad name": use letters, digits, '.', '_' and '-'`,
			"11: clients[4]: needs one of tokenFile or tokenEnv",
			"14: clients[5].tokenEnv: set tokenFile or tokenEnv, not both",
			`15: clients[6].name: duplicate client name "agent-f" (first at line 12)`,
			"16: clients[6].tokenEnv: token is 15 bytes after trimming whitespace; want at least 16",
			"17: clients[7].name: required",
			"18: clients[7].tokn: unknown key (want one of: name, tokenFile, tokenEnv)",
		}},
		{"bad_clients_identities.yaml", []string{
			`10: rules[0].identities[1]: unknown client "agent-x": with clients set, identities must name clients (agent-a, agent-b)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			_, err := Load(path)
			var errs ConfigErrors
			if !errors.As(err, &errs) {
				t.Fatalf("Load(%s) = %v, want ConfigErrors", path, err)
			}
			for _, w := range tt.want {
				if !hasLinePrefix(err.Error(), path+":"+w) {
					t.Errorf("Load(%s): no error line %q; got:\n%v", path, path+":"+w, err)
				}
			}
			if len(errs) != len(tt.want) {
				t.Errorf("Load(%s): %d errors, want %d:\n%v", path, len(errs), len(tt.want), err)
			}
			if strings.Contains(err.Error(), "short-tok") || strings.Contains(err.Error(), "0123456789abcde") {
				t.Errorf("an error quotes a token:\n%v", err)
			}
		})
	}
}
