package rules

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// errLine is how every line of a config error must start: FILE:LINE: .
var errLine = regexp.MustCompile(`^f\.yaml:[1-9][0-9]*: `)

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("admin: {listen: 127.0.0.1:1, tokenFile: testdata/admin-token}\nlimits: {maxInflight: 9}\n"))
	f.Add([]byte("rules:\n  - {allowPlaintext: true, hosts: [localhost], paths: [\"/a%2Fb/\"]}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yaml", data)
		if err == nil {
			if c == nil {
				t.Fatal("Parse returned neither a config nor an error")
			}
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !errLine.MatchString(line) {
				t.Fatalf("error line without FILE:LINE: %q", line)
			}
		}
	})
}

// fuzzRules covers each kind of path pattern and a method filter.
const fuzzRules = `
credentials:
  c: {source: file, file: testdata/gh-token}
rules:
  - {name: prefix, hosts: [a.example.com], paths: [/v1/], methods: [GET], credential: c, inject: {header: A, value: "{{ .Value }}"}}
  - {name: segment, hosts: [a.example.com], paths: [/v2], credential: c, inject: {header: A, value: "{{ .Value }}"}}
  - {name: glob, hosts: ["*.example.com"], paths: ["/r/*/i"], credential: c, inject: {header: A, value: "{{ .Value }}"}}
  - {name: encoded, hosts: [a.example.com], paths: ["/g%2Fp/"], credential: c, inject: {header: A, value: "{{ .Value }}"}}
  - {name: any, hosts: [b.example.com], credential: c, inject: {header: A, value: "{{ .Value }}"}}
`

func FuzzMatch(f *testing.F) {
	c, err := Parse("f.yaml", []byte(fuzzRules))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct{ host, method, path string }{
		{"a.example.com", "GET", "/v1/models"},
		{"a.example.com", "GET", "/admin/x/%2e%2e/%2e%2e/v1/"},
		{"a.example.com", "GET", "/admin/users/..%2F..%2Fv1/"},
		{"a.example.com", "get", "/v1/"},
		{"a.example.com", "GET", "/v1/..;/x"},
		{"a.example.com", "GET", "/v1/%252e%252e/"},
		{"x.example.com", "GET", "/r/a%2Fb/i"},
		{"x.example.com", "GET", "/r//i"},
		{"b.example.com", "GET", `/a\..\b`},
		{"b.example.com", "GET", "*"},
		{"a.example.com", "GET", "/g%2fp/x"},
		{"c.example.org", "GET", "/../x"},
	} {
		f.Add(s.host, s.method, s.path)
	}
	f.Fuzz(func(t *testing.T, host, method, raw string) {
		d, err := ParseDest(host, 443)
		if err != nil {
			return
		}
		r, err := c.Match(d, method, raw, "")
		r2, err2 := c.Match(d, method, raw, "")
		if r != r2 || (err == nil) != (err2 == nil) {
			t.Fatalf("Match(%v, %q, %q) not deterministic: %v, %v then %v, %v", d, method, raw, r, err, r2, err2)
		}
		if err != nil {
			identity := errors.Is(err, ErrIdentity) && r != nil
			if !identity && (r != nil || !errors.Is(err, ErrAmbiguousPath)) {
				t.Fatalf("Match(%v, %q, %q) = %v, %v; want nil and ErrAmbiguousPath, or a rule and ErrIdentity", d, method, raw, r, err)
			}
			if !c.Intercepts(d) {
				t.Fatalf("Match(%v, %q, %q) = %v for a host without rules", d, method, raw, err)
			}
			return
		}
		if r != nil && hasDotSegment(raw) {
			t.Fatalf("Match(%v, %q, %q) = rule %q for a path with a dot-segment", d, method, raw, r.Name)
		}
		if r != nil && !contains([]string{"GET"}, method) && r.Name == "prefix" {
			t.Fatalf("Match(%v, %q, %q) = rule %q, whose methods are [GET]", d, method, raw, r.Name)
		}
	})
}

// hasDotSegment is an oracle written apart from requestPath: a segment of
// raw, decoded once, is "." or ".." (before any ";"), split on / and \;
// or raw cannot be decoded at all.
func hasDotSegment(raw string) bool {
	for _, seg := range strings.FieldsFunc(raw, func(r rune) bool { return r == '/' || r == '\\' }) {
		dec, err := url.PathUnescape(seg)
		if err != nil {
			return true
		}
		for _, part := range strings.FieldsFunc(dec, func(r rune) bool { return r == '/' || r == '\\' }) {
			part, _, _ = strings.Cut(part, ";")
			if part == "." || part == ".." {
				return true
			}
		}
	}
	return false
}

func FuzzParseDest(f *testing.F) {
	for _, s := range []string{"api.example.com:443", "Api.Example.COM.", "[::1]:8443", "[2001:DB8:0:0::1]",
		"127.0.0.1", "127.1", "user@host", "[fe80::1%25eth0]:443", "a..b", "x:65536", "[::ffff:127.0.0.1]:80"} {
		f.Add(s, 443)
	}
	f.Add("example.com", 0)
	f.Fuzz(func(t *testing.T, authority string, defPort int) {
		d, err := ParseDest(authority, defPort)
		if err != nil {
			return
		}
		if d.Port < 1 || d.Port > 65535 || d.Host == "" || strings.HasSuffix(d.Host, ".") || d.Host != strings.ToLower(d.Host) {
			t.Fatalf("ParseDest(%q, %d) = %+v, not normalised", authority, defPort, d)
		}
		// A Dest's own spelling parses back to it: one destination, one Dest.
		again, err := ParseDest(d.String(), 0)
		if err != nil || again != d {
			t.Fatalf("ParseDest(%q) = %+v, %v; want %+v back", d.String(), again, err, d)
		}
	})
}
