package rules

import (
	"strings"
	"testing"
)

func TestParseDest(t *testing.T) {
	tests := []struct {
		in      string
		defPort int
		want    Dest
		wantErr string // substring; "" means success
	}{
		{"api.example.com:443", 443, Dest{"api.example.com", 443}, ""},
		{"Api.Example.COM.:443", 443, Dest{"api.example.com", 443}, ""},
		{"example.com", 443, Dest{"example.com", 443}, ""},
		{"example.com", 80, Dest{"example.com", 80}, ""},
		{"example.com.", 80, Dest{"example.com", 80}, ""},
		{"under_score.example.com:8080", 0, Dest{"under_score.example.com", 8080}, ""},
		{"127.0.0.1:8443", 0, Dest{"127.0.0.1", 8443}, ""},
		{"127.0.0.1", 80, Dest{"127.0.0.1", 80}, ""},
		{"[::1]:8443", 443, Dest{"::1", 8443}, ""},
		{"[::1]", 443, Dest{"::1", 443}, ""},
		{"[2001:DB8:0:0::1]:443", 443, Dest{"2001:db8::1", 443}, ""},
		{"", 443, Dest{}, "empty host"},
		{":443", 443, Dest{}, "empty host"},
		{".", 443, Dest{}, "empty host"},
		{"example.com", 0, Dest{}, "missing port"},
		{"example.com:", 443, Dest{}, "bad port"},
		{"example.com:0", 443, Dest{}, "out of range"},
		{"example.com:65536", 443, Dest{}, "out of range"},
		{"example.com:+443", 443, Dest{}, "bad port"},
		{"example.com:https", 443, Dest{}, "bad port"},
		{"user@example.com:443", 443, Dest{}, "unexpected '@'"},
		{"user:pass@example.com", 443, Dest{}, "unexpected '@'"},
		{"example.com/path", 443, Dest{}, "unexpected '/'"},
		{"example.com?x", 443, Dest{}, "unexpected '?'"},
		{"a..example.com", 443, Dest{}, "empty label"},
		{"A..", 443, Dest{}, "empty label"}, // found by FuzzParseDest: was "a."
		{"a..:443", 443, Dest{}, "empty label"},
		{"exa mple.com", 443, Dest{}, "bad character"},
		{"bücher.example", 443, Dest{}, "punycode"},
		{"::1", 443, Dest{}, "must be in brackets"},
		{"[::1", 443, Dest{}, "missing ']'"},
		{"[::1]x", 443, Dest{}, "unexpected"},
		{"[127.0.0.1]:443", 443, Dest{}, "bad IPv6"},
		{"[fe80::1%25eth0]:443", 443, Dest{}, "zone not allowed"},
		{strings.Repeat("a", 64) + ".com", 443, Dest{}, "longer than 63"},
		{"127.1", 443, Dest{}, "bad IPv4"},
		{"1.2.3.4.5", 443, Dest{}, "bad IPv4"},
		{"127.000.0.1", 443, Dest{}, "bad IPv4"},
		{"1234.example", 443, Dest{"1234.example", 443}, ""},
	}
	for _, tt := range tests {
		got, err := ParseDest(tt.in, tt.defPort)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ParseDest(%q, %d): unexpected error %v", tt.in, tt.defPort, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseDest(%q, %d) = %v, %v; want an error containing %q", tt.in, tt.defPort, got, err, tt.wantErr)
		case tt.wantErr == "" && got != tt.want:
			t.Errorf("ParseDest(%q, %d) = %+v, want %+v", tt.in, tt.defPort, got, tt.want)
		}
	}
}

func TestDestString(t *testing.T) {
	tests := []struct {
		d    Dest
		want string
	}{
		{Dest{"api.example.com", 443}, "api.example.com:443"},
		{Dest{"::1", 8443}, "[::1]:8443"},
		{Dest{"10.0.0.1", 80}, "10.0.0.1:80"},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.d, got, tt.want)
		}
		// String is the inverse of ParseDest.
		if back, err := ParseDest(tt.d.String(), 0); err != nil || back != tt.d {
			t.Errorf("ParseDest(%q) = %+v, %v; want %+v", tt.d.String(), back, err, tt.d)
		}
	}
}

func TestHostPattern(t *testing.T) {
	tests := []struct {
		pattern string
		dest    string
		want    bool
	}{
		{"api.example.com", "api.example.com:443", true},
		{"api.example.com", "api.example.com:80", true},
		{"api.example.com", "api.example.com:8443", false},
		{"api.example.com", "API.Example.Com.:443", true},
		{"API.EXAMPLE.COM.", "api.example.com:443", true},
		{"api.example.com", "example.com:443", false},
		{"api.example.com", "xapi.example.com:443", false},
		{"api.example.com:8443", "api.example.com:8443", true},
		{"api.example.com:8443", "api.example.com:443", false},
		{"*.example.com", "a.example.com:443", true},
		{"*.example.com", "a.b.c.example.com:443", true},
		{"*.example.com", "example.com:443", false},
		{"*.example.com", "aexample.com:443", false},
		{"*.example.com", "a.example.com.evil.com:443", false},
		{"*.example.com:9000", "a.example.com:9000", true},
		{"*.example.com:9000", "a.example.com:443", false},
		{"10.0.0.1", "10.0.0.1:443", true},
		{"10.0.0.1", "10.0.0.10:443", false},
		{"[::1]", "[::1]:80", true},
		{"[::1]:9000", "[0:0::1]:9000", true},
		{"[::1]:9000", "[::1]:9001", false},
	}
	for _, tt := range tests {
		p, err := parseHostPattern(tt.pattern)
		if err != nil {
			t.Errorf("parseHostPattern(%q): %v", tt.pattern, err)
			continue
		}
		d, err := ParseDest(tt.dest, 0)
		if err != nil {
			t.Fatalf("ParseDest(%q): %v", tt.dest, err)
		}
		if got := p.matches(d); got != tt.want {
			t.Errorf("pattern %q matches %q = %v, want %v", tt.pattern, tt.dest, got, tt.want)
		}
	}
}

func TestHostPatternErrors(t *testing.T) {
	for _, bad := range []string{"", "*", "*.", "*foo.com", "a.*.com", "*.*.com", "foo*.com", "*.1.2.3.4",
		"*.[::1]", "*.0.0.1", "a.com:0", "a.com:x", "http://a.com", "a.com/v1", "::1", "a b.com"} {
		if p, err := parseHostPattern(bad); err == nil {
			t.Errorf("parseHostPattern(%q) = %+v, want an error", bad, p)
		}
	}
}
