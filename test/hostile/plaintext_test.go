package hostile

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// secretsEnv is the child environment every process gets; only the child
// has these values.
var secretsEnv = map[string]string{"HOSTILE_KEY": keyValue, "HOSTILE_BASIC": basicValue, "HOSTILE_QKEY": queryValue}

const credentialsYAML = `credentials:
  key: {source: env, env: HOSTILE_KEY}
  basic: {source: env, env: HOSTILE_BASIC}
  qkey: {source: env, env: HOSTILE_QKEY}
`

// bearerRule is a rule injecting the key as a Bearer token.
func bearerRule(name, hosts, paths, extra string) string {
	r := fmt.Sprintf("  - name: %s\n    hosts: [%s]\n    credential: key\n    inject: {header: Authorization, value: \"Bearer {{ .Value }}\"}\n", name, hosts)
	if paths != "" {
		r += "    paths: [" + paths + "]\n"
	}
	return r + extra
}

// injectedKey reports whether the key arrived as the rule injects it.
func injectedKey(h http.Header) bool { return h.Get("Authorization") == "Bearer "+keyValue }

// TestBaselineInjection checks the harness: Go, curl and Python requests
// agents reach a ruled TLS upstream and the key is injected for each.
func TestBaselineInjection(t *testing.T) {
	up := startUpstream(t, "127.77.0.1:0", true, false, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "/v1/", "")})
	u := "https://" + up.addr + "/v1/models"
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Authorization", "Bearer placeholder")
	if resp, body := p.do(t, req); resp.StatusCode != 200 {
		t.Errorf("Go agent: expected 200, got %d %q", resp.StatusCode, body)
	}
	if code, body := p.curl(t, "-H", "Authorization: Bearer placeholder", u); code != 200 {
		t.Errorf("curl agent: expected 200, got %d %q", code, body)
	}
	out := p.python(t, fmt.Sprintf("import requests\nr = requests.get(%q, headers={'Authorization': 'Bearer placeholder'}, timeout=20)\nprint(r.status_code)\n", u))
	if strings.TrimSpace(out) != "200" {
		t.Errorf("python requests agent: expected 200, got %q", out)
	}
	n := 0
	for _, r := range up.seen() {
		if injectedKey(r.Header) {
			n++
		}
	}
	if n != 3 {
		t.Errorf("expected the key injected into 3 requests, upstream saw it in %d of %d", n, len(up.seen()))
	}
}

// cleartextInTunnel CONNECTs to a ruled host:port whose listener speaks
// plain HTTP and sends plain HTTP inside: no TLS, so a credential would
// cross the wire in clear.
func cleartextInTunnel(t *testing.T, rec *recorder, ruleHost, authority string) {
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" + bearerRule("api", ruleHost, "", "")})
	a := p.tunnel(t, authority)
	a.write(t, get(authority, "/v1/x"))
	resp, body, err := a.response(t)
	time.Sleep(200 * time.Millisecond) // let anything forwarded land at the recorder
	if l := leakIn(rec.bytes(), keyValue); l != "" {
		t.Errorf("the plain-HTTP upstream received the credential in clear: %s", l)
	}
	if err != nil {
		t.Fatalf("plain HTTP inside CONNECT %s: expected a 403 JSON refusal, got no response: %v", authority, err)
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("plain HTTP inside CONNECT %s: expected 403, got %d %q", authority, resp.StatusCode, trunc(body))
	}
	jsonErrorBody(t, "plain HTTP inside CONNECT", resp.StatusCode, resp.Header, body)
}

func TestCleartextInsideConnectRuledPort(t *testing.T) {
	rec := startRecorder(t, "127.77.1.1:0")
	cleartextInTunnel(t, rec, rec.addr, rec.addr)
}

func TestCleartextInsideConnectPort80(t *testing.T) {
	rec := startRecorder(t, "127.77.1.2:80")
	cleartextInTunnel(t, rec, "127.77.1.2", "127.77.1.2:80")
}

// TestCleartextAbsoluteForm sends http:// URLs on ruled hosts, with the
// default port and an explicit one: refused, never injected in clear.
func TestCleartextAbsoluteForm(t *testing.T) {
	rec80 := startRecorder(t, "127.77.1.3:80")
	recPort := startRecorder(t, "127.77.1.4:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" +
		bearerRule("plain80", "127.77.1.3", "", "") + bearerRule("plainport", recPort.addr, "", "")})
	for _, c := range []struct {
		url string
		rec *recorder
	}{{"http://127.77.1.3/v1/x", rec80}, {"http://" + recPort.addr + "/v1/x", recPort}} {
		code, body := p.curl(t, "-H", "Authorization: Bearer placeholder", c.url)
		if code != http.StatusForbidden {
			t.Errorf("curl -x proxy %s: expected 403, got %d %q", c.url, code, trunc(body))
		} else {
			jsonErrorBody(t, "curl "+c.url, code, nil, body)
		}
		if l := leakIn(c.rec.bytes(), keyValue); l != "" {
			t.Errorf("%s: the plain upstream received the credential in clear: %s", c.url, l)
		}
	}
}

// TestCleartextAllowPlaintextOptIn: a loopback rule that opts in with
// allowPlaintext: true does get the credential over http://.
func TestCleartextAllowPlaintextOptIn(t *testing.T) {
	rec := startRecorder(t, "127.77.1.5:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: credentialsYAML + "rules:\n" +
		bearerRule("optin", rec.addr, "", "    allowPlaintext: true\n")})
	code, body := p.curl(t, "-H", "Authorization: Bearer placeholder", "http://"+rec.addr+"/v1/x")
	if code != 200 {
		t.Errorf("allowPlaintext rule: expected 200, got %d %q", code, trunc(body))
	}
	if !strings.Contains(string(rec.bytes()), "Authorization: Bearer "+keyValue) {
		t.Errorf("allowPlaintext rule: expected the upstream to receive the injected key; it received %q", trunc(rec.bytes()))
	}
}
