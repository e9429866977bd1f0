package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/proxy"
	"github.com/credproxy/credproxy/rules"
)

// Explain says what a real request then does: the same rule and slot for
// an injection, nothing sent for a pass, the same problem type for a
// refusal.
func TestExplainAgreesWithTheProxy(t *testing.T) {
	e, _, up, plain := newEnv(t, "", okHandler)
	cfg, err := rules.Load(e.dir + "/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := e.client(e.ca)
	for _, tc := range []struct{ method, url, action string }{
		{"GET", "https://api.example.test/v1/models", "inject"},
		{"GET", "https://api.example.test/maps/x", "inject"},
		{"GET", "https://api.example.test/other", "pass"},
		{"GET", "https://api.example.test/v1/%2e%2e/admin", "refuse"},
		{"TRACE", "https://api.example.test/v1/x", "refuse"},
		{"GET", "http://api.example.test/v1/x", "refuse"},
		{"GET", "http://localhost/plain", "inject"},
	} {
		x, err := proxy.Explain(cfg, tc.method, tc.url, cfg.Identity)
		if err != nil || x.Action != tc.action {
			t.Errorf("Explain %s %s = %+v, %v; want %s", tc.method, tc.url, x, err, tc.action)
			continue
		}
		before := len(up.seen()) + len(plain.seen())
		req, _ := http.NewRequest(tc.method, tc.url, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		switch x.Action {
		case "refuse":
			if _, rule := refusedAs(t, resp, x.Problem); resp.StatusCode != x.Status || rule != x.Rule {
				t.Errorf("%s %s: %d rule %q, Explain said %d %s rule %q", tc.method, tc.url, resp.StatusCode, rule, x.Status, x.Problem, x.Rule)
			}
		default:
			seen := append(up.seen(), plain.seen()...)
			if resp.StatusCode != 200 || len(seen) != before+1 {
				t.Fatalf("%s %s: %d, upstream saw %d new; want 200 and one", tc.method, tc.url, resp.StatusCode, len(seen)-before)
			}
			last := seen[len(seen)-1]
			slot, name, _ := strings.Cut(x.Inject, " ")
			got := ""
			switch slot {
			case "header":
				got = last.Header.Get(name)
			case "query":
				got = last.URL.Query().Get(name)
			}
			if (x.Action == "inject") != strings.Contains(got, testKey) {
				t.Errorf("%s %s: Explain said %s into %q; the upstream saw %q there", tc.method, tc.url, x.Action, x.Inject, got)
			}
			if x.Action == "pass" && last.Header.Get("Authorization") != "" {
				t.Errorf("%s %s: Explain said pass; the upstream saw Authorization", tc.method, tc.url)
			}
		}
		resp.Body.Close()
	}
}
