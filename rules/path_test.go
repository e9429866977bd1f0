package rules

import (
	"errors"
	"strings"
	"testing"
)

// TestMatchRawPath drives Match with paths as they go out on the wire
// (req.URL.EscapedPath()): every spelling of a dot-segment is refused, so no
// upstream can resolve a path the rule did not see.
func TestMatchRawPath(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_PATHS", "paths-secret-value")
	c := mustLoad(t, "testdata/paths.yaml")
	const amb = "ambiguous"
	tests := []struct {
		host, method, path string
		want               string // rule name, "" for none, amb for ErrAmbiguousPath
	}{
		// Plain paths.
		{"api.example.com", "GET", "/v1/models", "v1"},
		{"api.example.com", "GET", "/v1/", "v1"},
		{"api.example.com", "GET", "/v1", ""},
		{"api.example.com", "GET", "/admin", ""},
		{"api.example.com", "GET", "", ""},           // sent as "/"
		{"any.example.com", "GET", "", "any-path"},   // sent as "/"
		{"any.example.com", "OPTIONS", "*", ""},      // method filter
		{"api.example.com", "OPTIONS", "*", ""},      // "*" is no path under /v1/
		{"any.example.com", "GET", "*", "any-path"},  // no paths: any target
		{"api.example.com", "GET", "v1/models", amb}, // not origin-form
		// Dot-segments in every encoding, from /admin into /v1/ and out of it.
		{"api.example.com", "GET", "/admin/users/..%2F..%2Fv1/", amb},
		{"api.example.com", "GET", "/admin/x/%2e%2e/%2e%2e/v1/", amb},
		{"api.example.com", "GET", "/admin/x/%2E%2E/%2E%2E/v1/", amb},
		{"api.example.com", "GET", "/admin/.%2e/v1/", amb},
		{"api.example.com", "GET", "/admin/%2e./v1/", amb},
		{"api.example.com", "GET", "/admin/%2E./v1/", amb},
		{"api.example.com", "GET", "/v1/../admin", amb},
		{"api.example.com", "GET", "/v1/%2e%2e/admin", amb},
		{"api.example.com", "GET", "/v1/..", amb},
		{"api.example.com", "GET", "/v1/x/..", amb},
		{"api.example.com", "GET", "/v1/./x", amb},
		{"api.example.com", "GET", "/v1/%2e/x", amb},
		{"api.example.com", "GET", "/v1/.", amb},
		{"api.example.com", "GET", "/./v1/", amb},
		{"api.example.com", "GET", "/..", amb},
		{"api.example.com", "GET", "/v1/..%2f", amb},
		{"api.example.com", "GET", "/v1/%2e%2e%2fadmin", amb},
		{"api.example.com", "GET", "/v1/x%2F..%2Fadmin", amb},
		{"api.example.com", "GET", "/v1/..%5Cadmin", amb},
		{"api.example.com", "GET", "/v1/..%5cadmin", amb},
		{"api.example.com", "GET", "/v1/%5C..%5C", amb},
		{"api.example.com", "GET", "/v1/..;/admin", amb},          // Tomcat path parameter
		{"api.example.com", "GET", "/v1/%2e%2e;x=1/admin", amb},   // the same, encoded
		{"api.example.com", "GET", "/v1/%c0%ae%c0%ae/admin", amb}, // overlong UTF-8 '.'
		// Backslashes, bad escapes, control bytes.
		{"api.example.com", "GET", `/v1\..\admin`, amb},
		{"api.example.com", "GET", `/v1/a\b`, amb},
		{"api.example.com", "GET", "/v1/%", amb},
		{"api.example.com", "GET", "/v1/%2", amb},
		{"api.example.com", "GET", "/v1/%zz", amb},
		{"api.example.com", "GET", "/v1/%00", amb},
		{"api.example.com", "GET", "/v1/a%0Ab", amb},
		{"api.example.com", "GET", "/v1/a%7f", amb},
		{"api.example.com", "GET", "/v1/a\x00", amb},
		{"api.example.com", "GET", "/v1/a\rb", amb},
		// Not dot-segments: names that merely contain dots, and text that
		// decodes once to "%2e" (the upstream decodes once too).
		{"api.example.com", "GET", "/v1/.well-known", "v1"},
		{"api.example.com", "GET", "/v1/...", "v1"},
		{"api.example.com", "GET", "/v1/a..b", "v1"},
		{"api.example.com", "GET", "/v1/..a", "v1"},
		{"api.example.com", "GET", "/v1/file.json", "v1"},
		{"api.example.com", "GET", "/v1/%252e%252e/admin", "v1"},
		{"api.example.com", "GET", "/admin/%252e%252e/v1/", ""},
		{"api.example.com", "GET", "/%76%31/models", "v1"}, // %76%31 is "v1"
		{"api.example.com", "GET", "/v1/a%20b", "v1"},
		{"api.example.com", "GET", "/v1/caf%C3%A9", "v1"},
		// %2F is data, not a separator: kept as text for matching.
		{"gitlab.example.com", "GET", "/api/v4/projects/group%2Fproject/issues", "gitlab"},
		{"gitlab.example.com", "GET", "/api/v4/projects/group%2fproject/issues", "gitlab"},
		{"gitlab.example.com", "GET", "/api%2Fv4/projects", ""},
		{"enc.example.com", "GET", "/projects/group%2Fproject/x", "encoded-pattern"},
		{"enc.example.com", "GET", "/projects/group%2fproject/x", "encoded-pattern"},
		{"enc.example.com", "GET", "/projects/group/project/x", ""},
		{"glob.example.com", "GET", "/repos/a%2Fb/issues", "glob"},
		{"glob.example.com", "GET", "/repos/a/b/issues", ""},
		// Duplicate slashes are kept: prefixes match literally, globs refuse.
		{"api.example.com", "GET", "/v1//models", "v1"},
		{"api.example.com", "GET", "//v1/models", ""},
		{"api.example.com", "GET", "/admin//v1/", ""},
		{"glob.example.com", "GET", "/repos//issues", ""},
		{"glob.example.com", "GET", "/repos/x/issues", "glob"},
		// Methods are case-sensitive tokens; the config's are upper-cased.
		{"any.example.com", "GET", "/", "any-path"},
		{"any.example.com", "POST", "/", "any-path"},
		{"any.example.com", "get", "/", ""},
		{"any.example.com", "Post", "/", ""},
		// A host without rules is never checked: it is tunnelled or denied
		// whole, and never reaches Match in the proxy anyway.
		{"other.example.com", "GET", "/v1/../admin", ""},
		{"other.example.com", "GET", `/a\b`, ""},
	}
	for _, tt := range tests {
		d, err := ParseDest(tt.host, 443)
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Match(d, tt.method, tt.path, "")
		got := ""
		switch {
		case err != nil && r != nil:
			t.Errorf("Match(%s, %s, %q) = %q and error %v, want one or the other", tt.host, tt.method, tt.path, r.Name, err)
			continue
		case errors.Is(err, ErrAmbiguousPath):
			got = amb
		case err != nil:
			t.Errorf("Match(%s, %s, %q): error %v, want nil or ErrAmbiguousPath", tt.host, tt.method, tt.path, err)
			continue
		case r != nil:
			got = r.Name
		}
		if got != tt.want {
			t.Errorf("Match(%s, %s, %q) = %q, want %q", tt.host, tt.method, tt.path, got, tt.want)
		}
	}
}

func TestRequestPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"*", "*"},
		{"/v1/models", "/v1/models"},
		{"/v1//models/", "/v1//models/"},
		{"/a%2fb/c", "/a%2Fb/c"},
		{"/a%5cb", "/a%5Cb"},
		{"/%41%62c", "/Abc"},
		{"/a%20b", "/a b"},
		{"/a%252e", "/a%2e"},
		{"/a%25", "/a%"},
	}
	for _, tt := range tests {
		got, err := requestPath(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("requestPath(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestPathPatternErrors(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{"v1", "must start with '/'"},
		{"/a/[*", "bad glob"},
		{"/v1/../admin", "dot-segment"},
		{"/v1/./x", "dot-segment"},
		{"/v1/..", "dot-segment"},
		{"/v1//x", "empty segment"},
		{`/v1\x`, "backslash"},
		{"/v1/%20x", "only %2F and %5C"},
		{"/v1/%zz", "only %2F and %5C"},
	}
	for _, tt := range tests {
		_, err := parsePathPattern(tt.pattern)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parsePathPattern(%q) = %v, want an error containing %q", tt.pattern, err, tt.want)
		}
	}
}
