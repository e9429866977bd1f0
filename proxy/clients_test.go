package proxy_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// pythonBin is the interpreter with the requests package: $CREDPROXY_PYTHON
// (scripts/test.sh sets it when it has to install requests) or python3.
func pythonBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CREDPROXY_PYTHON")
	if bin == "" {
		bin = "python3"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s is required (scripts/test.sh checks for it): %v", bin, err)
	}
	return path
}

// TestPythonRequestsThroughProxy runs the real Python requests library the
// way an agent would: HTTPS_PROXY/HTTP_PROXY and REQUESTS_CA_BUNDLE, with a
// placeholder key.
func TestPythonRequestsThroughProxy(t *testing.T) {
	e, _, up, plain := newEnv(t, "", okHandler)
	script := `
import requests
for url, hdr in (("https://api.example.test/v1/models", "Authorization"), ("http://localhost/x", "X-Api-Key")):
    r = requests.get(url, headers={hdr: "placeholder"}, timeout=20)
    print(r.status_code, r.text)
`
	cmd := exec.Command(pythonBin(t), "-c", script)
	cmd.Env = append(os.Environ(), "HTTPS_PROXY="+e.url.String(), "HTTP_PROXY="+e.url.String(),
		"REQUESTS_CA_BUNDLE="+e.caFile, "NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Count(string(out), "200 ok") != 2 {
		t.Fatalf("python requests: %v:\n%s", err, out)
	}
	if a := up.seen()[0].Header.Get("Authorization"); a != "Bearer "+testKey {
		t.Errorf("HTTPS upstream Authorization via requests = %q", a)
	}
	if k := plain.seen()[0].Header.Get("X-Api-Key"); k != testKey {
		t.Errorf("plain upstream X-Api-Key via requests = %q", k)
	}
}
