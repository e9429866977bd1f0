package proxy_test

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/rules"
)

// SetConfig swaps the rules for requests that start afterwards: a stream
// injected under the old rules finishes, and the next request in the same
// HTTP/2 tunnel (a connection intercepted before the swap) is matched on the
// new ones, so a credential taken off a host stops going there at once.
func TestSetConfigAppliesToRequestsThatStartAfter(t *testing.T) {
	release := make(chan struct{})
	e, _, up, _ := newEnv(t, "", sseHandler(release))
	c := e.client(e.ca)
	c.Transport.(*http.Transport).ForceAttemptHTTP2 = true // one tunnel for both requests
	resp, err := c.Get("https://echo.example.test/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); line != "data: first\n" || resp.ProtoMajor != 2 {
		t.Fatalf("stream: first line %q over HTTP/%d, want the first event over HTTP/2", line, resp.ProtoMajor)
	}

	// The same file without the echo rule.
	old := e.px.Config()
	data, err := os.ReadFile(old.Path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "  - name: echo\n    hosts: [echo.example.test]\n", "  - name: echo\n    hosts: [gone.example.test]\n", 1)
	next, err := rules.Parse(filepath.Join(filepath.Dir(old.Path), "next.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	e.px.SetConfig(next)
	if e.px.Config() != next {
		t.Fatal("Config() is not the snapshot just set")
	}

	resp2, err := c.Get("https://echo.example.test/stream")
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	io.Copy(io.Discard, resp2.Body)
	resp2.Body.Close()
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data: second") {
		t.Errorf("the stream begun before SetConfig did not finish: rest %q", rest)
	}
	seen := up.seen()
	if len(seen) != 2 {
		t.Fatalf("upstream saw %d requests, want 2", len(seen))
	}
	if a := seen[0].Header.Get("Authorization"); a != "Bearer "+testKey {
		t.Errorf("first request (old rules): Authorization %q, want the credential", a)
	}
	if a := seen[1].Header.Get("Authorization"); a != "" {
		t.Errorf("second request, same tunnel, new rules: Authorization %q, want none", a)
	}
	if resp2.ProtoMajor != 2 {
		t.Errorf("second request over HTTP/%d: not the same tunnel", resp2.ProtoMajor)
	}
}
