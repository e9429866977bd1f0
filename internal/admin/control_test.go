package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/internal/control/controltest"
	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/metrics"
)

// controlEnv is the control API (controltest: a real lease manager over
// test sources, on a fake clock) served by the admin server on 127.0.0.1.
type controlEnv struct {
	*controltest.Env
	url string
}

func newControlEnv(t *testing.T, reload func() error) *controlEnv {
	t.Helper()
	e := &controlEnv{Env: controltest.New(t, reload)}
	e.url = serveAdmin(t, Options{Metrics: metrics.New(), Token: testToken, Control: e.Ctl}).URL
	return e
}

// call sends method path with the admin token and body ("" for none).
func (e *controlEnv) call(t *testing.T, method, path, body string) (int, http.Header, string) {
	t.Helper()
	return do(t, method, e.url+path, "Bearer "+testToken, body)
}

func (e *controlEnv) begin(t *testing.T, body string) lease.TaskInfo {
	t.Helper()
	status, hdr, resp := e.call(t, "POST", "/tasks", body)
	var in lease.TaskInfo
	if err := json.Unmarshal([]byte(resp), &in); status != http.StatusCreated || err != nil || in.ID == "" {
		t.Fatalf("POST /tasks %s: %d %s, want 201 with a task", body, status, resp)
	}
	if hdr.Get("Location") != "/tasks/"+in.ID {
		t.Errorf("POST /tasks: Location %q, want /tasks/%s", hdr.Get("Location"), in.ID)
	}
	return in
}

var controlRoutesList = []struct{ method, path, body string }{
	{"POST", "/tasks", `{"purpose":"x","ttl":"5m"}`},
	{"GET", "/tasks", ""},
	{"DELETE", "/tasks/tsk_1", ""},
	{"GET", "/leases", ""},
	{"POST", "/leases/cpl_1/revoke", ""},
	{"GET", "/credentials", ""},
	{"POST", "/explain", `{"method":"GET","url":"https://api.openai.com/v1/models"}`},
	{"POST", "/-/reload", ""},
}

// Every control route needs the token, compared in constant time (a digest
// compare, so neither a prefix nor the length gets through).
func TestControlRoutesNeedTheToken(t *testing.T) {
	e := newControlEnv(t, nil)
	for _, r := range controlRoutesList {
		for _, tc := range authCases {
			if tc.want == http.StatusOK {
				continue
			}
			status, hdr, body := do(t, r.method, e.url+r.path, tc.auth, r.body)
			wantProblem(t, fmt.Sprintf("%s %s with %s", r.method, r.path, tc.name), status, hdr, body, http.StatusUnauthorized, "admin-unauthorized")
		}
		status, hdr, body := e.call(t, r.method, r.path, r.body)
		if status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound && !strings.Contains(r.path, "_1") {
			t.Errorf("%s %s with the token: %d %s", r.method, r.path, status, body)
		}
		if status >= 400 && hdr.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: error %d as %q, want problem+json", r.method, r.path, status, hdr.Get("Content-Type"))
		}
	}
	if ts := e.M.Tasks(); len(ts) != 1 {
		t.Errorf("tasks begun: %d, want only the authenticated one", len(ts))
	}
	// No token configured: every control route is closed.
	closed := serveAdmin(t, Options{Control: control.New(control.Options{Leases: e.M})})
	for _, r := range controlRoutesList {
		status, hdr, body := do(t, r.method, closed.URL+r.path, "Bearer "+testToken, r.body)
		wantProblem(t, r.method+" "+r.path+" with no token configured", status, hdr, body, http.StatusForbidden, "admin-disabled")
	}
}

// Begin → requests → end: the task's leases are revoked together, audited
// task_end, and the task shows as ended.
func TestControlTaskLifecycle(t *testing.T) {
	e := newControlEnv(t, nil)
	in := e.begin(t, `{"purpose":"migrate orders","ttl":"30m","credentials":["db","api"]}`)
	if in.State != "open" || in.TTL != "30m0s" || len(in.Leases) != 2 || in.Purpose != "migrate orders" {
		t.Fatalf("begun task = %+v, want open, 30m, two leases", in)
	}
	for _, name := range []string{"db", "api"} {
		if _, err := e.M.Get(context.Background(), name, "agent-a", lease.Use{Task: in.ID}); err != nil {
			t.Fatal(err)
		}
		if n := e.Srcs[name].Acquires(); n != 1 {
			t.Fatalf("%s: %d acquires, want the one at begin", name, n)
		}
	}
	_, _, list := e.call(t, "GET", "/tasks", "")
	if !strings.Contains(list, in.ID) || !strings.Contains(list, `"state":"open"`) {
		t.Errorf("GET /tasks = %s, want the open task", list)
	}
	_, _, leases := e.call(t, "GET", "/leases", "")
	if strings.Count(leases, `"task":"`+in.ID+`"`) != 2 || strings.Contains(leases, "sk-test") {
		t.Errorf("GET /leases = %s, want two leases of the task and no value", leases)
	}
	status, _, body := e.call(t, "DELETE", "/tasks/"+in.ID, "")
	var ended lease.TaskInfo
	if err := json.Unmarshal([]byte(body), &ended); status != 200 || err != nil || ended.State != "ended" || len(ended.Leases) != 0 {
		t.Fatalf("DELETE /tasks/%s = %d %s, want 200 ended holding nothing", in.ID, status, body)
	}
	for _, name := range []string{"db", "api"} {
		if n := e.Srcs[name].Revokes(); n != 1 {
			t.Errorf("%s: %d revokes after DELETE, want 1", name, n)
		}
	}
	if got := strings.Count(e.Audit.String(), `"reason":"task_end"`); got != 2 {
		t.Errorf("audit has %d task_end revocations, want 2:\n%s", got, e.Audit.String())
	}
	status, hdr, body := e.call(t, "DELETE", "/tasks/tsk_0000000000000000", "")
	wantProblem(t, "DELETE an unknown task", status, hdr, body, http.StatusNotFound, "admin-not-found")

	// Expiry on the manager's clock: a 1m task is gone after a minute.
	short := e.begin(t, `{"purpose":"one call","ttl":"1m","credentials":["api"]}`)
	e.Clock.Advance(time.Minute)
	testutil.WaitFor(t, func() bool { return strings.Contains(e.Audit.String(), `"reason":"task_expired"`) },
		"the 1m task's lease revoked as task_expired")
	if n := e.Srcs["api"].Revokes(); n != 2 {
		t.Errorf("api: %d revokes, want 2 (task end, then expiry)", n)
	}
	_, _, list = e.call(t, "GET", "/tasks", "")
	if !strings.Contains(list, `"id":"`+short.ID+`"`) || !strings.Contains(list, `"state":"expired"`) {
		t.Errorf("GET /tasks = %s, want the short task expired", list)
	}
}

func TestControlHostileTaskInput(t *testing.T) {
	e := newControlEnv(t, nil)
	huge := `{"purpose":"` + strings.Repeat("a", 2<<20) + `"}`
	for _, tc := range []struct {
		name, body, ctype string
		want              int
		slug              string
	}{
		{"huge body", huge, "", 413, "admin-body-too-large"},
		{"bad JSON", `{"purpose":`, "", 400, "admin-bad-request"},
		{"not an object", `["db"]`, "", 400, "admin-bad-request"},
		{"unknown field", `{"purpose":"x","scope":"all"}`, "", 400, "admin-bad-request"},
		{"two objects", `{"purpose":"x"}{"purpose":"y"}`, "", 400, "admin-bad-request"},
		{"negative ttl", `{"ttl":"-5m"}`, "", 400, "admin-bad-request"},
		{"zero ttl", `{"ttl":"0s"}`, "", 400, "admin-bad-request"},
		{"overflowing ttl", `{"ttl":"99999999999999h"}`, "", 400, "admin-bad-request"},
		{"ttl as a number", `{"ttl":300}`, "", 400, "admin-bad-request"},
		{"ttl without unit", `{"ttl":"300"}`, "", 400, "admin-bad-request"},
		{"unknown credential", `{"credentials":["nope"]}`, "", 400, "admin-bad-request"},
		{"shared credential", `{"credentials":["openai"]}`, "", 400, "admin-bad-request"},
		{"credential twice", `{"credentials":["db","db"]}`, "", 400, "admin-bad-request"},
		{"purpose with a newline", `{"purpose":"a\nb"}`, "", 400, "admin-bad-request"},
		{"identity no request can have", `{"identity":"agent-z"}`, "", 400, "admin-bad-request"},
		{"purpose too long", `{"purpose":"` + strings.Repeat("a", 300) + `"}`, "", 400, "admin-bad-request"},
		{"form body", `purpose=x`, "application/x-www-form-urlencoded", 415, "admin-unsupported-media-type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.url+"/tasks", strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+testToken)
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var buf strings.Builder
			_, _ = fmt.Fprint(&buf, readAll(t, resp))
			wantProblem(t, tc.name, resp.StatusCode, resp.Header, buf.String(), tc.want, tc.slug)
		})
	}
	if ts := e.M.Tasks(); len(ts) != 0 {
		t.Fatalf("hostile input began tasks: %+v", ts)
	}
	for name, src := range e.Srcs {
		if src.Acquires() != 0 {
			t.Errorf("hostile input acquired %s", name)
		}
	}
	// A huge but valid TTL is capped (leases.maxTTL 2h; db's maxTTL 1h).
	if in := e.begin(t, `{"ttl":"1000000h"}`); in.TTL != "2h0m0s" {
		t.Errorf("ttl 1000000h = %s, want capped at leases.maxTTL 2h", in.TTL)
	}
	if in := e.begin(t, `{"ttl":"1000000h","credentials":["db"]}`); in.TTL != "1h0m0s" {
		t.Errorf("ttl 1000000h naming db = %s, want capped at db's maxTTL 1h", in.TTL)
	}
	if in := e.begin(t, ``); in.TTL != "15m0s" { // an empty body: every default
		t.Errorf("empty body: ttl %s, want the default 15m", in.TTL)
	}
	if in := e.begin(t, `{"identity":"agent-a"}`); in.Identity != "agent-a" { // the config's sidecar identity
		t.Errorf("identity agent-a: task %+v", in)
	}
}

// A store that fails at begin: 502, and nothing is held.
func TestControlBeginStoreFailure(t *testing.T) {
	e := newControlEnv(t, nil)
	e.Srcs["api"].FailAcquire(&lease.SourceError{Status: 503, Err: errors.New("vault: sealed")})
	status, hdr, body := e.call(t, "POST", "/tasks", `{"credentials":["db","api"]}`)
	wantProblem(t, "begin with api failing", status, hdr, body, http.StatusBadGateway, "admin-store-failed")
	if n, ts := len(e.M.List()), e.M.Tasks(); n != 0 || len(ts) != 0 || e.Srcs["db"].Revokes() != 1 {
		t.Fatalf("after a failed begin: %d leases, tasks %+v, db revoked %d; want nothing held", n, ts, e.Srcs["db"].Revokes())
	}
}

func TestControlCredentialsAndExplain(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_OPENAI", "sk-test-never-shown")
	e := newControlEnv(t, nil)
	status, _, body := e.call(t, "GET", "/credentials", "")
	var creds []control.CredentialInfo
	if err := json.Unmarshal([]byte(body), &creds); status != 200 || err != nil || len(creds) != 3 {
		t.Fatalf("GET /credentials = %d %s, want three credentials", status, body)
	}
	if c := creds[1]; c.Name != "db" || c.Scope != "task" || c.MaxTTL != "1h0m0s" ||
		fmt.Sprint(c.Hosts) != "[reports.example.test *.reports.example.test]" || len(c.Rules) != 1 || c.Rules[0].Name != "reports" {
		t.Errorf("db = %+v, want scope task, its rule's hosts", c)
	}
	if c := creds[2]; c.Name != "openai" || c.Rules[0].Purpose != "chat" || c.Source != "env" {
		t.Errorf("openai = %+v, want env, rule purpose chat", c)
	}
	if strings.Contains(body, "sk-test") || strings.Contains(body, "CREDPROXY_TEST_OPENAI") {
		t.Errorf("GET /credentials shows a value or where it is read from: %s", body)
	}

	for _, tc := range []struct{ body, want string }{
		{`{"method":"POST","url":"https://api.openai.com/v1/chat/completions"}`,
			`{"action":"inject","destination":"api.openai.com:443","rule":"openai","credential":"openai","scope":"shared","inject":"header Authorization","purpose":"chat"}`},
		{`{"url":"https://eu.reports.example.test/v1/q"}`,
			`{"action":"inject","destination":"eu.reports.example.test:443","rule":"reports","credential":"db","scope":"task","inject":"query key"}`},
		{`{"method":"DELETE","url":"https://reports.example.test/v1/q"}`,
			`{"action":"pass","destination":"reports.example.test:443"}`},
		{`{"url":"https://github.com/"}`, `{"action":"tunnel","destination":"github.com:443"}`},
		{`{"url":"http://api.example.test/x"}`,
			`{"action":"refuse","destination":"api.example.test:80","rule":"api","problem":"cleartext-refused","status":403,"detail":"rule \"api\" sends its credential only over TLS that credproxy verifies: use https://"}`},
		{`{"url":"https://reports.example.test/v1/%2e%2e/admin"}`,
			`{"action":"refuse","destination":"reports.example.test:443","problem":"ambiguous-path","status":403,"detail":"the path has encoded separators or dot-segments, which credproxy does not forward to reports.example.test:443"}`},
	} {
		status, _, got := e.call(t, "POST", "/explain", tc.body)
		if status != 200 || strings.TrimSpace(got) != tc.want {
			t.Errorf("POST /explain %s = %d\n%s\nwant\n%s", tc.body, status, got, tc.want)
		}
	}
	for _, bad := range []string{`{"url":"ftp://x/"}`, `{"url":"/relative"}`, `{"url":"https://u:p@api.openai.com/"}`,
		`{"method":"GET /","url":"https://api.openai.com/"}`, `{"url":"https://[::1/"}`, `{"url":"https://a.test/","extra":1}`} {
		status, hdr, body := e.call(t, "POST", "/explain", bad)
		wantProblem(t, "POST /explain "+bad, status, hdr, body, http.StatusBadRequest, "admin-bad-request")
	}
}

func TestControlReload(t *testing.T) {
	e := newControlEnv(t, nil)
	status, hdr, body := e.call(t, "POST", "/-/reload", "")
	wantProblem(t, "reload with no hook", status, hdr, body, http.StatusNotImplemented, "admin-not-implemented")

	var calls atomic.Int32
	var fail atomic.Bool
	e = newControlEnv(t, func() error {
		calls.Add(1)
		if fail.Load() {
			return errors.New("rules.yaml:3: credentials.db.scope: must be shared, identity or task")
		}
		return nil
	})
	if status, _, body := e.call(t, "POST", "/-/reload", ""); status != 200 || calls.Load() != 1 {
		t.Fatalf("reload = %d %s (%d calls), want 200 and one call", status, body, calls.Load())
	}
	fail.Store(true)
	status, hdr, body = e.call(t, "POST", "/-/reload", "")
	if p := wantProblem(t, "failed reload", status, hdr, body, http.StatusUnprocessableEntity, "admin-reload-failed"); p != nil && !strings.Contains(body, "rules.yaml:3") {
		t.Errorf("failed reload = %s, want the config error", body)
	}
}
