package clients

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

const (
	tokenA = "tok-test-clients-agent-a-8e2c51f0"
	tokenB = "tok-test-clients-agent-b-3b9d07a6"
)

// identityRules: two clients; both may use openai, whose leases are per
// identity; only agent-a may use anthropic.
const identityRules = `clients:
  - {name: agent-a, tokenEnv: CP_TOKEN_A}
  - {name: agent-b, tokenEnv: CP_TOKEN_B}
credentials:
  openai: {source: env, env: CP_OPENAI_KEY, scope: identity}
  anthropic: {source: env, env: CP_ANTHROPIC_KEY}
rules:
  - name: openai
    hosts: [api.openai.com]
    identities: [agent-a, agent-b]
    credential: openai
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: anthropic
    hosts: [api.anthropic.com]
    identities: [agent-a]
    credential: anthropic
    inject: {header: x-api-key, value: "{{ .Value }}"}
    remove: [Authorization]
`

// TestIdentities: with `clients:`, curl with `credproxy env` (no --client)
// gets 407; with --client NAME (http://NAME:TOKEN@… in HTTPS_PROXY) it gets
// through; agent-b is refused agent-a's rule with 403; the two identities'
// openai leases are separate and audited under their names.
func TestIdentities(t *testing.T) {
	oa, an := startOpenAI(t), startAnthropic(t)
	p := startProcEnv(t, procOpts{Upstreams: []*upstream{oa, an}, YAML: identityRules}, "CP_TOKEN_A="+tokenA, "CP_TOKEN_B="+tokenB)
	tool(t, "curl")
	keys := []string{"OPENAI_API_KEY=" + placeholder, "ANTHROPIC_API_KEY=" + placeholder}

	if code, connect, out := curlAPI(t, p.agentEnv(t, keys...), "openai"); connect != 407 {
		t.Errorf("no client in the proxy URL: expected CONNECT answered 407; got CONNECT %d, status %d:\n%s", connect, code, out)
	}
	envA, envB := p.agentEnvAs(t, "agent-a", keys...), p.agentEnvAs(t, "agent-b", keys...)
	for _, c := range []struct {
		name string
		env  []string
		api  string
		want int
	}{{"agent-a", envA, "openai", 200}, {"agent-a", envA, "anthropic", 200}, {"agent-b", envB, "openai", 200}, {"agent-b", envB, "anthropic", 403}} {
		if code, _, out := curlAPI(t, c.env, c.api); code != c.want {
			t.Errorf("%s calling %s: expected %d; got %d:\n%s", c.name, c.api, c.want, code, out)
		}
	}
	for _, r := range an.seen() {
		if r.Header.Get("X-Api-Key") != anthropicKey {
			t.Errorf("api.anthropic.com saw x-api-key %q; expected only agent-a's injected requests to reach it", r.Header.Get("X-Api-Key"))
		}
	}
	if n := len(an.seen()); n != 1 {
		t.Errorf("api.anthropic.com saw %d requests; expected 1 (agent-a's; agent-b's refused at the proxy)", n)
	}
	checkOpenAIKey(t, oa)

	leases := map[string]string{} // identity -> lease id
	for _, ev := range p.audit() {
		if ev["event"] == "lease.created" && ev["credential"] == "openai" {
			leases[fmt.Sprint(ev["identity"])] = fmt.Sprint(ev["lease_id"])
		}
	}
	if leases["agent-a"] == "" || leases["agent-b"] == "" || leases["agent-a"] == leases["agent-b"] || len(leases) != 2 {
		t.Errorf("openai (scope: identity) leases by identity: %v; expected one each for agent-a and agent-b, distinct", leases)
	}
}

// curlAPI posts to api (openai or anthropic) with curl and the env and
// returns the final status, the CONNECT status and the output.
func curlAPI(t *testing.T, env []string, api string) (code, connect int, out string) {
	t.Helper()
	url, hdr := chatURL, `Authorization: Bearer $OPENAI_API_KEY`
	if api == "anthropic" {
		url, hdr = "https://api.anthropic.com/v1/messages", `x-api-key: $ANTHROPIC_API_KEY`
	}
	cmd := exec.Command(tool(t, "sh"), "-c", `exec curl -sS --max-time 30 -o - -w '\n%{http_code} %{http_connect}\n' "$1" -H "`+hdr+`" -H 'Content-Type: application/json' -d '{"model":"m","max_tokens":1,"messages":[]}'`, "sh", url)
	cmd.Env = env
	out, _ = (&client{name: "curl " + api, cmd: cmd}).run(t)
	for _, line := range strings.Split(out, "\n") { // stdout's last line, before stderr
		if n, _ := fmt.Sscanf(line, "%d %d", &code, &connect); n == 2 && len(line) > 4 && line[3] == ' ' {
			break
		}
	}
	return code, connect, out
}
