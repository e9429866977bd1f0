package proxy_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/proxy"
)

// taskConfig adds a task-scoped credential on its own path.
const taskConfig = `
  - name: reports
    hosts: [other.example.test]
    credential: task-key
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

// A `scope: task` credential goes out only inside an open task; the task
// header never reaches an upstream, ruled or not, and the refusals say why.
func TestTaskScopedCredentialAndTaskHeader(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_TASK_KEY", "sk-test-task-key")
	cfg := strings.Replace(baseConfig, "credentials:\n", "credentials:\n  task-key: {source: env, env: CREDPROXY_TEST_TASK_KEY, scope: task}\n", 1) + taskConfig
	e, _, up, plain := newEnvWith(t, cfg, okHandler)
	c := e.client(e.ca)
	send := func(url, task string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if task != "" {
			req.Header.Set(proxy.TaskHeader, task)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	// No task open: refused before anything is sent.
	resp := send("https://other.example.test/r", "")
	if msg, rule := refusedAs(t, resp, "task-required"); resp.StatusCode != 403 || rule != "reports" || !strings.Contains(msg, "task-key") {
		t.Errorf("no task: %d %q rule %q, want 403 task-required naming the credential", resp.StatusCode, msg, rule)
	}
	resp = send("https://other.example.test/r", "tsk_0000000000000000")
	if msg, _ := refusedAs(t, resp, "task-not-open"); resp.StatusCode != 403 || !strings.Contains(msg, "tsk_0000000000000000") {
		t.Errorf("unknown task: %d %q, want 403 task-not-open naming the task", resp.StatusCode, msg)
	}
	if n := len(up.seen()); n != 0 {
		t.Fatalf("upstream saw %d refused requests", n)
	}

	in, err := e.mgr.BeginTask(context.Background(), lease.TaskSpec{Purpose: "quarterly report", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{
		"https://other.example.test/r",     // the task credential
		"https://api.example.test/v1/x",    // a shared credential
		"https://api.example.test/nothing", // an intercepted host, no rule for the path
		"http://localhost/plain",           // plain HTTP
	} {
		for _, task := range []string{in.ID, ""} {
			if resp := send(u, task); resp.StatusCode != 200 {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("GET %s in task %q: %d %s, want 200", u, task, resp.StatusCode, body)
			}
		}
	}
	for _, r := range append(up.seen(), plain.seen()...) {
		if v, ok := r.Header[proxy.TaskHeader]; ok {
			t.Errorf("%s %s: the task header reached the upstream: %q", r.Method, r.URL.Path, v)
		}
		if r.Host == "other.example.test" && r.Header.Get("Authorization") != "Bearer sk-test-task-key" {
			t.Errorf("task request carried %q, want the task credential", r.Header.Get("Authorization"))
		}
	}
	if _, err := e.mgr.EndTask(context.Background(), in.ID); err != nil {
		t.Fatal(err)
	}
	resp = send("https://other.example.test/r", in.ID)
	if msg, _ := refusedAs(t, resp, "task-not-open"); !strings.Contains(msg, "has ended") {
		t.Errorf("ended task: %q, want it to say the task has ended", msg)
	}
	audit := e.audit.String()
	for _, want := range []string{`"task":"` + in.ID + `"`, `"purpose":"quarterly report"`, `"reason":"task_end"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %s:\n%s", want, audit)
		}
	}
	if strings.Contains(audit, "sk-test-task-key") {
		t.Errorf("audit holds the value")
	}
}
