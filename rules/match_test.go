package rules

import (
	"errors"
	"testing"
)

// ambiguousPath stands for ErrAmbiguousPath in the tables; notFor+name for
// ErrIdentity with that rule.
const (
	ambiguousPath = "<ambiguous>"
	notFor        = "not for identity: "
)

func TestMatch(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_MATCH", "match-test-value")
	c := mustLoad(t, "testdata/match.yaml")
	tests := []struct {
		name     string
		dest     string // authority; no port means 443
		method   string
		path     string
		identity string
		want     string // rule name, "" for no match, ambiguousPath for the error
	}{
		{"exact", "api.example.com", "GET", "/", "", "exact"},
		{"exact on port 80", "api.example.com:80", "GET", "/", "", "exact"},
		{"exact, other port", "api.example.com:8443", "GET", "/", "", ""},
		{"case and trailing dot", "API.Example.COM.", "GET", "/", "", "exact"},
		{"parent of exact", "example.com", "GET", "/", "", ""},
		{"wildcard one label", "a.wild.example.com", "GET", "/", "", "wildcard"},
		{"wildcard several labels", "a.b.c.wild.example.com:80", "GET", "/", "", "wildcard"},
		{"wildcard not apex", "wild.example.com", "GET", "/", "", ""},
		{"wildcard, other port", "a.wild.example.com:8080", "GET", "/", "", ""},
		{"explicit port", "ports.example.com:8443", "GET", "/", "", "port"},
		{"explicit port, not default", "ports.example.com:443", "GET", "/", "", ""},
		{"IPv4 with port", "127.0.0.1:8443", "GET", "/", "", "port"},
		{"IPv4 default port", "10.0.0.1", "GET", "/", "", "ipv4"},
		{"IPv4 other", "10.0.0.2", "GET", "/", "", ""},
		{"IPv6 with port", "[::1]:9000", "GET", "/", "", "ipv6"},
		{"IPv6 other spelling", "[2001:db8:0::1]:80", "GET", "/", "", "ipv6"},
		{"IPv6 wrong port", "[::1]:443", "GET", "/", "", ""},
		{"prefix", "paths.example.com", "GET", "/v1/models", "", "prefix"},
		{"prefix itself", "paths.example.com", "GET", "/v1/", "", "prefix"},
		{"prefix without slash", "paths.example.com", "GET", "/v1", "", ""},
		{"segment prefix itself", "paths.example.com", "GET", "/v2", "", "segment"},
		{"segment prefix below", "paths.example.com", "GET", "/v2/x/y", "", "segment"},
		{"segment prefix not v2x", "paths.example.com", "GET", "/v2x", "", ""},
		{"glob", "paths.example.com", "GET", "/repos/abc/issues", "", "glob"},
		{"glob star within segment", "paths.example.com", "GET", "/repos/a/b/issues", "", ""},
		{"glob whole path", "paths.example.com", "GET", "/repos/a/issues/1", "", ""},
		{"traversal out of prefix", "paths.example.com", "GET", "/v1/../admin", "", ambiguousPath},
		{"traversal into prefix", "paths.example.com", "GET", "/admin/../v1/x", "", ambiguousPath},
		{"dot segments", "paths.example.com", "GET", "/./v2/./x", "", ambiguousPath},
		{"double slash, not merged", "paths.example.com", "GET", "//v1//models", "", ""},
		{"double slash inside prefix", "paths.example.com", "GET", "/v1//models", "", "prefix"},
		{"traversal above root", "paths.example.com", "GET", "/../../v2", "", ambiguousPath},
		{"traversal, host without paths", "api.example.com", "GET", "/a/../b", "", ambiguousPath},
		{"empty path", "paths.example.com", "GET", "", "", ""},
		{"empty path, no path filter", "api.example.com", "GET", "", "", "exact"},
		{"method allowed", "methods.example.com", "GET", "/", "", "methods"},
		{"config method normalised", "methods.example.com", "GET", "/", "", "methods"},
		{"request method case-sensitive", "methods.example.com", "head", "/", "", ""},
		{"method refused", "methods.example.com", "POST", "/", "", ""},
		{"identity allowed", "id.example.com", "GET", "/", "agent-a", "identity-only"},
		{"identity falls through", "id.example.com", "GET", "/", "agent-b", "exact"},
		{"identity empty falls through", "id.example.com", "GET", "/", "", "exact"},
		{"first match wins", "order.example.com", "GET", "/a/x", "", "first"},
		{"later rule when first misses", "order.example.com", "GET", "/b", "", "second"},
		{"wildcard of later rule", "x.order.example.com", "GET", "/a/x", "", "second"},
		{"earlier wildcard beats later exact", "a.mix.example.com", "GET", "/", "", "early-wild"},
		{"later exact when wildcard port misses", "b.mix.example.com:8443", "GET", "/", "", "late-exact"},
		{"no match", "nothing.example.org", "GET", "/", "", ""},
		{"identity a on its rule", "idonly.example.com", "GET", "/a/x", "agent-a", "only-a"},
		{"identity b on a later rule", "idonly.example.com", "GET", "/a/x", "agent-b", "only-b"},
		{"identity c: first rule it missed", "idonly.example.com", "GET", "/a/x", "agent-c", notFor + "only-a"},
		{"identity a outside its paths", "idonly.example.com", "GET", "/b", "agent-a", notFor + "only-b"},
		{"no identity", "idonly.example.com", "GET", "/b", "", notFor + "only-b"},
		{"identity miss, path ambiguous", "idonly.example.com", "GET", "/a/../b", "agent-c", ambiguousPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ParseDest(tt.dest, 443)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			r, err := c.Match(d, tt.method, tt.path, tt.identity)
			switch {
			case errors.Is(err, ErrAmbiguousPath) && r == nil:
				got = ambiguousPath
			case errors.Is(err, ErrIdentity) && r != nil:
				got = notFor + r.Name
			case err != nil:
				t.Fatalf("Match(%v, %s, %q, %q) = %v, %v; want a rule, ErrAmbiguousPath alone or ErrIdentity with a rule", d, tt.method, tt.path, tt.identity, r, err)
			case r != nil:
				got = r.Name
			}
			if got != tt.want {
				t.Errorf("Match(%v, %s, %q, %q) = %q, want %q", d, tt.method, tt.path, tt.identity, got, tt.want)
			}
			// Intercepts must hold whenever a rule matches.
			if got != "" && got != ambiguousPath && !c.Intercepts(d) {
				t.Errorf("Intercepts(%v) = false, but rule %q matches", d, tt.want)
			}
		})
	}
}

func TestIntercepts(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_MATCH", "match-test-value")
	c := mustLoad(t, "testdata/match.yaml")
	tests := []struct {
		dest string
		want bool
	}{
		{"api.example.com:443", true},
		{"paths.example.com:443", true}, // whatever the path
		{"methods.example.com:80", true},
		{"id.example.com:443", true},
		{"a.b.wild.example.com:443", true},
		{"wild.example.com:443", false},
		{"api.example.com:8443", false},
		{"ports.example.com:8443", true},
		{"ports.example.com:443", false},
		{"[::1]:9000", true},
		{"[::1]:443", false},
		{"elsewhere.example.net:443", false},
	}
	for _, tt := range tests {
		d, err := ParseDest(tt.dest, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Intercepts(d); got != tt.want {
			t.Errorf("Intercepts(%v) = %v, want %v", d, got, tt.want)
		}
	}
}
