package rules

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// manyRules is a config with n rules on distinct hosts, each with a path,
// method and identity filter, so a match exercises every check.
func manyRules(tb testing.TB, n int) *Config {
	tb.Helper()
	var b strings.Builder
	b.WriteString("credentials:\n  c: {source: env, env: PATH}\nrules:\n")
	for i := 0; i < n; i++ {
		host := fmt.Sprintf("api%d.example.com", i)
		if i%2 == 1 {
			host = fmt.Sprintf("*.svc%d.example.com", i)
		}
		fmt.Fprintf(&b, "  - {name: r%d, hosts: [%q], paths: [/v1/, \"/repos/*/issues\"], methods: [GET, POST], "+
			"identities: [agent-a], credential: c, inject: {header: Authorization, value: \"Bearer {{ .Value }}\"}}\n", i, host)
	}
	c, err := Parse("bench.yaml", []byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func BenchmarkMatch1000Rules(b *testing.B) {
	c := manyRules(b, 1000)
	last := c.Rules[len(c.Rules)-1] // *.svc999.example.com
	d := Dest{Host: "a.svc999.example.com", Port: 443}
	b.ReportAllocs()
	for b.Loop() {
		if r, err := c.Match(d, "POST", "/repos/x/issues", "agent-a"); r != last || err != nil {
			b.Fatalf("matched %v, %v; want the last rule", r, err)
		}
	}
}

// BenchmarkMatch1000RulesScan is the same search over every rule, without
// the host index: what the index saves.
func BenchmarkMatch1000RulesScan(b *testing.B) {
	c := manyRules(b, 1000)
	d := Dest{Host: "a.svc999.example.com", Port: 443}
	b.ReportAllocs()
	for b.Loop() {
		var got *Rule
		p, _ := requestPath("/repos/x/issues")
		for _, r := range c.Rules {
			if r.matchesHost(d) && r.matchesRequest("POST", p) && r.allows("agent-a") {
				got = r
				break
			}
		}
		if got == nil {
			b.Fatal("no match")
		}
	}
}

func BenchmarkIntercepts(b *testing.B) {
	c := manyRules(b, 1000)
	d := Dest{Host: "api998.example.com", Port: 443}
	b.ReportAllocs()
	for b.Loop() {
		if !c.Intercepts(d) {
			b.Fatal("not intercepted")
		}
	}
}

func BenchmarkApply(b *testing.B) {
	cases := []struct{ name, inject string }{
		{"bearer", `{header: Authorization, value: "Bearer {{ .Value }}"}`},
		{"basic", `{header: Authorization, value: "{{ basic .Data.username .Data.password }}"}`},
		{"query", `{query: key, value: "{{ .Value }}"}`},
		{"template", `{header: Authorization, value: "{{ printf \"Bearer %s\" .Value }}"}`},
	}
	v := Values{Value: "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz",
		Data: map[string]string{"username": "v-token-readonly-abc123", "password": "A1a-0123456789abcdefgh"}}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			r := ruleFor(b, tc.inject, "    remove: [X-Api-Key]")
			req := &http.Request{Method: "GET", Header: http.Header{},
				URL: &url.URL{Scheme: "https", Host: "api.example.com", Path: "/v1/models", RawQuery: "a=1&key=x"}}
			b.ReportAllocs()
			for b.Loop() {
				req.Header["Authorization"] = []string{"Bearer placeholder"}
				req.URL.RawQuery = "a=1&key=x"
				if err := r.Apply(req, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseDest(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseDest("Api.Example.com:443", 443); err != nil {
			b.Fatal(err)
		}
	}
}
