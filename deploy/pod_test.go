package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestPodTransparent runs kubernetes/credproxy-transparent.yaml as it is
// (unmatched: deny): its init container installs the redirect, credproxy
// runs as the uid the redirect excludes, and the agent's own command (Node's
// fetch, no proxy variables) and the openai npm SDK get the credential
// injected.
func TestPodTransparent(t *testing.T) {
	lookPath(t, "node")
	lookPath(t, "curl")
	p := startPod(t, "kubernetes/credproxy-transparent.yaml", nil)
	agent := p.agent(t)

	out, err := p.exec(agent, p.envOf(agent), p.argv(agent))
	if err != nil || strings.TrimSpace(out) != "200" {
		t.Fatalf("the manifest's agent command: %v, printed %q; want 200", err, out)
	}
	if n := p.up.credentialSeen(); n != 1 {
		t.Fatalf("the upstream saw the credential %d times after the agent's request, want 1: %+v", n, p.up.requests())
	}

	// The openai npm SDK, with the agent's environment (a placeholder key,
	// the CA variables, no proxy variables): JSON, then a stream.
	sdk := filepath.Join("..", "test", "clients", "node")
	if _, err := os.Stat(filepath.Join(sdk, "node_modules", "openai")); err != nil {
		t.Fatalf("the openai SDK is not installed (scripts/test.sh runs npm ci --prefix test/clients/node): %v", err)
	}
	script, _ := filepath.Abs(filepath.Join(sdk, "openai.mjs"))
	out, err = p.exec(agent, p.envOf(agent), []string{"node", script})
	if err != nil || strings.Count(out, podReply) != 2 {
		t.Fatalf("the openai SDK: %v, printed %q; want the reply twice (JSON, then streamed)", err, out)
	}
	if n := p.up.credentialSeen(); n != 3 {
		t.Fatalf("the upstream saw the credential %d times after the SDK's two requests, want 3", n)
	}

	ca := p.caFile(t)
	if code, e := p.curl(t, "--cacert", ca, "-H", "Authorization: Bearer placeholder", "https://api.openai.com/v1/models"); code != "200" {
		t.Errorf("curl --noproxy '*' to a ruled host: %q %s, want 200", code, e)
	}
	if n := p.up.credentialSeen(); n != 4 {
		t.Errorf("the upstream saw the credential %d times after curl, want 4", n)
	}
	// The agent picks the IP (here one where nothing listens): for a ruled
	// name credproxy dials the name itself, so the key goes to the host
	// the name resolves to for credproxy, never to an address the agent chose.
	if code, e := p.curl(t, "--cacert", ca, "--connect-to", "api.openai.com:443:10.77.0.99:443", "https://api.openai.com/v1/models"); code != "200" {
		t.Errorf("a ruled name sent to another IP: %q %s, want 200 from the name's own upstream", code, e)
	}
	if n := p.up.credentialSeen(); n != 5 {
		t.Errorf("the upstream saw the credential %d times, want 5", n)
	}
	before := len(p.up.requests())
	// Around credproxy: the upstream's IP (no SNI of a ruled host), an
	// unruled name, plain HTTP to a ruled name. Under unmatched: deny each is
	// closed by credproxy, never sent.
	for _, c := range [][]string{
		{"--cacert", p.up.caFile, "https://" + internetIP + "/v1/models"},
		{"--cacert", p.up.caFile, "https://unruled.example.test/v1/models"},
		{"http://api.openai.com/v1/models"},
		{"--cacert", p.up.caFile, "--connect-to", "::" + internetIP + ":443", "https://unruled.example.test/v1/models"},
	} {
		if code, e := p.curl(t, c...); code != "" || e == "" {
			t.Errorf("curl %q under unmatched: deny: status %q, want the connection refused", c, code)
		}
	}
	if got := p.up.requests(); len(got) != before {
		t.Errorf("requests reached the upstream around credproxy: %+v", got[before:])
	}
	p.checkNotRedirectedIntoItself(t)
	// The admin API shares the pod's loopback: its lease routes need the
	// token only the sidecar mounts.
	if code, _ := p.curl(t, "http://127.0.0.1:9464/leases"); code != "401" && code != "403" {
		t.Errorf("the agent reading /leases without the token: %q, want 401 or 403", code)
	}
}

// TestPodTransparentTunnel runs the same manifest with unmatched: tunnel:
// what no rule names is spliced to where it was going, untouched.
func TestPodTransparentTunnel(t *testing.T) {
	lookPath(t, "curl")
	p := startPod(t, "kubernetes/credproxy-transparent.yaml", func(cfg string) string {
		return strings.Replace(cfg, "unmatched: deny", "unmatched: tunnel", 1)
	})
	ca := p.caFile(t)
	// An unruled host is spliced: it verifies with its real certificate
	// (the upstream CA), and not with credproxy's.
	if code, e := p.curl(t, "--cacert", p.up.caFile, "https://unruled.example.test/v1/models"); code != "200" {
		t.Errorf("an unruled host with its own CA: %q %s, want 200 (spliced)", code, e)
	}
	if code, _ := p.curl(t, "--cacert", ca, "https://unruled.example.test/v1/models"); code != "" {
		t.Errorf("an unruled host trusting only credproxy's CA: %q, want a certificate failure (no leaf minted)", code)
	}
	// The upstream's IP with no SNI: spliced, never injected.
	if code, e := p.curl(t, "--cacert", p.up.caFile, "-H", "Authorization: Bearer placeholder", "https://"+internetIP+"/v1/models"); code != "200" {
		t.Errorf("the upstream IP: %q %s, want 200 (spliced)", code, e)
	}
	// Plain HTTP to a ruled host: spliced, never injected.
	if code, e := p.curl(t, "http://api.openai.com/v1/models"); code != "200" {
		t.Errorf("plain HTTP to a ruled host: %q %s, want 200 (spliced)", code, e)
	}
	if n := p.up.credentialSeen(); n != 0 {
		t.Errorf("the credential reached the upstream %d times on connections no rule matched: %+v", n, p.up.requests())
	}
	// And the ruled host is still injected.
	if code, e := p.curl(t, "--cacert", ca, "https://api.openai.com/v1/models"); code != "200" || p.up.credentialSeen() != 1 {
		t.Errorf("a ruled host: %q %s, credential seen %d times; want 200 and 1", code, e, p.up.credentialSeen())
	}
	for _, r := range p.up.requests() {
		if !r.TLS && r.Authorization != "" {
			t.Errorf("plain HTTP request carried Authorization %q", r.Authorization)
		}
	}
	p.checkNotRedirectedIntoItself(t)
}

var uidRule = regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s+RETURN\b.*owner UID match (\d+)`)

// checkNotRedirectedIntoItself: credproxy's own upstream connections left
// through the uid exclusion (its packet counter moved), and credproxy never
// saw one of its own connections come back.
func (p *runningPod) checkNotRedirectedIntoItself(t *testing.T) {
	t.Helper()
	out := p.ns.Run(t, "iptables", "-t", "nat", "-L", "CREDPROXY_OUTPUT", "-n", "-v", "-x")
	m := uidRule.FindStringSubmatch(out)
	if m == nil || m[2] != strconv.Itoa(p.sideUID) {
		t.Fatalf("no RETURN rule for credproxy's uid %d in:\n%s", p.sideUID, out)
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Errorf("the uid %d exclusion matched no packet: credproxy's upstream connections went elsewhere\n%s", p.sideUID, out)
	}
	if strings.Contains(p.log.String(), "credproxy's own listener") {
		t.Errorf("credproxy refused a connection to its own listener (its traffic was redirected into it):\n%s", p.log.String())
	}
}

// TestPodHTTPSProxy runs kubernetes/credproxy-sidecar.yaml, the variant for
// clusters that forbid NET_ADMIN: no redirect, the agent's own command
// (Python urllib) reaches credproxy through HTTPS_PROXY.
func TestPodHTTPSProxy(t *testing.T) {
	lookPath(t, "python3")
	p := startPod(t, "kubernetes/credproxy-sidecar.yaml", nil)
	agent := p.agent(t)
	out, err := p.exec(agent, p.envOf(agent), p.argv(agent))
	if err != nil || strings.TrimSpace(out) != "200" {
		t.Fatalf("the manifest's agent command: %v, printed %q; want 200", err, out)
	}
	if n := p.up.credentialSeen(); n != 1 {
		t.Errorf("the upstream saw the credential %d times, want 1: %+v", n, p.up.requests())
	}
	// Without the redirect, a client that ignores HTTPS_PROXY goes around
	// credproxy: it reaches the API, but with no credential. This is the
	// one difference from the transparent pod.
	if code, e := p.curl(t, "--cacert", p.up.caFile, "https://api.openai.com/v1/models"); code != "200" {
		t.Errorf("curl --noproxy '*' without a redirect: %q %s, want 200 straight from the upstream", code, e)
	}
	if n := p.up.credentialSeen(); n != 1 {
		t.Errorf("the upstream saw the credential %d times, want still 1", n)
	}
}
