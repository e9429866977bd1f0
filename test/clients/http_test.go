package clients

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const chatURL = "https://api.openai.com/v1/chat/completions"

// TestCurl: curl with the env, the placeholder in its Authorization.
func TestCurl(t *testing.T) {
	u := startOpenAI(t)
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: openaiRules})
	env := p.agentEnv(t, "OPENAI_API_KEY="+placeholder)
	curl := func(body string) *exec.Cmd {
		cmd := exec.Command(tool(t, "sh"), "-c", `exec curl -sS -N --fail-with-body --max-time 60 "$1" -H "Authorization: Bearer $OPENAI_API_KEY" -H 'Content-Type: application/json' -d "$2"`,
			"sh", chatURL, body)
		cmd.Env = env
		return cmd
	}
	tool(t, "curl")
	out, err := (&client{name: "curl", cmd: curl(`{"model":"gpt-test","messages":[]}`)}).run(t)
	if err != nil || !strings.Contains(out, "hello from the fake openai") {
		t.Fatalf("curl JSON: expected the fake completion; got %v:\n%s", err, out)
	}
	streamed(t, u, &client{name: "curl stream", cmd: curl(`{"model":"gpt-test","messages":[],"stream":true}`)})
	checkOpenAIKey(t, u)
}

const requestsScript = `
import os, requests
url = "https://api.openai.com/v1/chat/completions"
h = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}
r = requests.post(url, headers=h, json={"model": "gpt-test", "messages": []}, timeout=60)
r.raise_for_status()
print(r.json()["choices"][0]["message"]["content"], flush=True)
with requests.post(url, headers=h, json={"model": "gpt-test", "messages": [], "stream": True}, stream=True, timeout=60) as r:
    r.raise_for_status()
    for line in r.iter_lines(chunk_size=None):
        if line:
            print(line.decode(), flush=True)
`

const httpxScript = `
import os, httpx
url = "https://api.openai.com/v1/chat/completions"
h = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}
with httpx.Client(timeout=60) as c:
    r = c.post(url, headers=h, json={"model": "gpt-test", "messages": []})
    r.raise_for_status()
    print(r.json()["choices"][0]["message"]["content"], flush=True)
    with c.stream("POST", url, headers=h, json={"model": "gpt-test", "messages": [], "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line:
                print(line, flush=True)
`

func TestPythonRequests(t *testing.T) { testPython(t, "requests", requestsScript) }

func TestPythonHTTPX(t *testing.T) { testPython(t, "httpx", httpxScript) }

// testPython runs a script that posts once for JSON, once streaming.
func testPython(t *testing.T, lib, script string) {
	u := startOpenAI(t)
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: openaiRules})
	cmd := exec.Command(python(t), "-c", script)
	cmd.Env = p.agentEnv(t, "OPENAI_API_KEY="+placeholder)
	out := streamed(t, u, &client{name: "python " + lib, cmd: cmd})
	if !strings.Contains(out, "hello from the fake openai") {
		t.Errorf("python %s: expected the fake completion in the output; got:\n%s", lib, out)
	}
	checkOpenAIKey(t, u)
}

// TestGoDefaultClient re-runs this test binary as a Go agent that uses
// http.DefaultClient: http.ProxyFromEnvironment and the system roots from
// SSL_CERT_FILE, both read from the env it is given.
func TestGoDefaultClient(t *testing.T) {
	u := startOpenAI(t)
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: openaiRules})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = p.agentEnv(t, "OPENAI_API_KEY="+placeholder, goAgentVar+"=1")
	out := streamed(t, u, &client{name: "go default client", cmd: cmd})
	if !strings.Contains(out, "hello from the fake openai") {
		t.Errorf("go default client: expected the fake completion in the output; got:\n%s", out)
	}
	checkOpenAIKey(t, u)
}

// goAgentVar makes TestMain run goAgent instead of the tests.
const goAgentVar = "CREDPROXY_CLIENTS_GO_AGENT"

// goAgent is the Go client: one JSON post, one streamed, with
// http.DefaultClient; it prints what it receives line by line.
func goAgent() int {
	for _, body := range []string{`{"model":"gpt-test","messages":[]}`, `{"model":"gpt-test","messages":[],"stream":true}`} {
		req, err := http.NewRequest("POST", chatURL, strings.NewReader(body))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		req.Header.Set("Authorization", "Bearer "+os.Getenv("OPENAI_API_KEY"))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				fmt.Println(sc.Text())
			}
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || sc.Err() != nil {
			fmt.Fprintln(os.Stderr, resp.Status, sc.Err())
			return 1
		}
	}
	return 0
}

// TestTunnelledHostVerifies: a host with no rule is tunnelled, so the agent
// sees its real certificate, from a CA in the roots credproxy was started
// with (SSL_CERT_FILE). The bundle `credproxy env` gives must hold those
// roots as well as credproxy's CA, for curl and requests alike.
func TestTunnelledHostVerifies(t *testing.T) {
	u := startUpstream(t, "files.example.net", publicCA, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "tunnelled ok")
	})
	p := startProc(t, procOpts{Upstreams: []*upstream{u}, YAML: openaiRules})
	env := p.agentEnv(t)
	curl := exec.Command(tool(t, "curl"), "-sS", "--fail", "--max-time", "30", "https://files.example.net/")
	curl.Env = env
	if out, err := (&client{name: "curl tunnelled", cmd: curl}).run(t); err != nil || !strings.Contains(out, "tunnelled ok") {
		t.Errorf("curl to a tunnelled host with a publicly trusted certificate: expected it to verify and print \"tunnelled ok\"; got %v:\n%s", err, out)
	}
	py := exec.Command(python(t), "-c", `import requests; r = requests.get("https://files.example.net/", timeout=30); r.raise_for_status(); print(r.text)`)
	py.Env = env
	if out, err := (&client{name: "requests tunnelled", cmd: py}).run(t); err != nil || !strings.Contains(out, "tunnelled ok") {
		t.Errorf("requests to a tunnelled host with a publicly trusted certificate: expected it to verify and print \"tunnelled ok\"; got %v:\n%s", err, out)
	}
	for _, r := range u.seen() {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("tunnelled host saw Authorization %q; expected nothing injected", r.Header.Get("Authorization"))
		}
	}
}
