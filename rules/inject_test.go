package rules

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// ruleFor compiles a one-rule config around an inject block written in YAML
// flow style, such as `{header: Authorization, value: "Bearer {{ .Value }}"}`.
func ruleFor(t testing.TB, inject string, extra string) *Rule {
	t.Helper()
	src := fmt.Sprintf(`
credentials:
  c: {source: env, env: PATH}
rules:
  - name: r
    hosts: [api.example.com]
    credential: c
    inject: %s
%s`, inject, extra)
	c, err := Parse("inline.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c.Rules[0]
}

func TestApplyHeader(t *testing.T) {
	r := ruleFor(t, `{header: authorization, value: "Bearer {{ .Value }}"}`, "    remove: [X-Api-Key, x-goog-api-key]")
	req := httptest.NewRequest("GET", "https://api.example.com/v1/models", nil)
	// The agent holds a placeholder: it must be replaced, never kept beside the real key.
	req.Header.Add("Authorization", "Bearer placeholder")
	req.Header.Add("Authorization", "Bearer second-placeholder")
	req.Header.Set("X-Api-Key", "agent-key")
	req.Header.Set("X-Goog-Api-Key", "agent-key")
	req.Header.Set("Accept", "application/json")

	if err := r.Apply(req, Values{Value: "sk-real"}); err != nil {
		t.Fatal(err)
	}
	want := http.Header{
		"Authorization": {"Bearer sk-real"},
		"Accept":        {"application/json"},
	}
	if !reflect.DeepEqual(req.Header, want) {
		t.Errorf("headers = %v, want %v", req.Header, want)
	}
}

func TestApplyRemoveSameHeader(t *testing.T) {
	// Remove runs before injection, so listing the injected header is harmless.
	r := ruleFor(t, `{header: X-Api-Key, value: "{{ .Value }}"}`, "    remove: [x-api-key, Authorization]")
	req := httptest.NewRequest("GET", "https://api.example.com/", nil)
	req.Header.Set("Authorization", "Bearer placeholder")
	req.Header.Set("X-Api-Key", "placeholder")
	if err := r.Apply(req, Values{Value: "k"}); err != nil {
		t.Fatal(err)
	}
	if got := req.Header; len(got) != 1 || got.Get("X-Api-Key") != "k" {
		t.Errorf("headers = %v, want only X-Api-Key: k", got)
	}
}

func TestApplyQuery(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"no query", "", "key=s%26cret+1"},
		{"appended after others", "a=1&b=2", "a=1&b=2&key=s%26cret+1"},
		{"replaced in place", "a=1&key=placeholder&b=2", "a=1&key=s%26cret+1&b=2"},
		{"duplicates dropped", "key=x&a=1&key=y", "key=s%26cret+1&a=1"},
		{"escaped name replaced", "k%65y=x&a=%2F", "key=s%26cret+1&a=%2F"},
		{"bare name replaced", "a=1&key", "a=1&key=s%26cret+1"},
		{"similar names kept", "akey=1&key2=2", "akey=1&key2=2&key=s%26cret+1"},
		{"empty parts dropped", "a=1&&b=2&", "a=1&b=2&key=s%26cret+1"},
	}
	r := ruleFor(t, `{query: key, value: "{{ .Value }}"}`, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "https://api.example.com/maps", nil)
			req.URL.RawQuery = tt.raw
			if err := r.Apply(req, Values{Value: "s&cret 1"}); err != nil {
				t.Fatal(err)
			}
			if req.URL.RawQuery != tt.want {
				t.Errorf("RawQuery = %q, want %q", req.URL.RawQuery, tt.want)
			}
			if got := req.URL.Query()["key"]; len(got) != 1 || got[0] != "s&cret 1" {
				t.Errorf("key = %q, want the one secret", got)
			}
		})
	}
}

func TestApplyBasic(t *testing.T) {
	r := ruleFor(t, `{header: Authorization, value: '{{ basic .Data.username .Data.password }}'}`, "")
	if r.value.fast == nil {
		t.Error("basic template did not take the fast path")
	}
	req := httptest.NewRequest("GET", "https://api.example.com/", nil)
	req.SetBasicAuth("agent", "placeholder")
	v := Values{Data: map[string]string{"username": "v-token-ro", "password": "p@ss:word"}}
	if err := r.Apply(req, v); err != nil {
		t.Fatal(err)
	}
	user, pass, ok := req.BasicAuth()
	if !ok || user != "v-token-ro" || pass != "p@ss:word" {
		t.Errorf("BasicAuth() = %q, %q, %v; want v-token-ro, p@ss:word", user, pass, ok)
	}
	if n := len(req.Header["Authorization"]); n != 1 {
		t.Errorf("%d Authorization headers, want 1", n)
	}
}

// TestFastPathAgreesWithTemplate renders each shape both ways.
func TestFastPathAgreesWithTemplate(t *testing.T) {
	v := Values{Value: "sk-1", Data: map[string]string{"u": "user", "p": "pa:ss", "token": "t0k"}}
	long := Values{Data: map[string]string{"u": strings.Repeat("u", 200), "p": strings.Repeat("p", 300)}}
	tests := []struct {
		src  string
		fast bool
	}{
		{"{{ .Value }}", true},
		{"Bearer {{ .Value }}", true},
		{"Bearer {{.Value}};x", true},
		{"Token token={{ .Data.token }}", true},
		{"{{ basic .Data.u .Data.p }}", true},
		{"Proxy {{ basic .Data.u .Value }} end", true},
		{"Bearer   {{- .Value -}}   !", true},
		{"{{ .Value }}{{ .Value }}", false},
		{"{{ printf \"%s-%s\" .Value .Data.u }}", false},
		{"{{ .Value | printf \"%q\" }}", false},
		{"{{ $x := .Value }}{{ $x }}", false},
		{"static", false},
	}
	for _, tt := range tests {
		vt, err := parseValueTemplate("t", tt.src)
		if err != nil {
			t.Fatalf("parse %q: %v", tt.src, err)
		}
		if got := vt.fast != nil; got != tt.fast {
			t.Errorf("%q: fast path = %v, want %v", tt.src, got, tt.fast)
		}
		for _, vals := range []Values{v, long} {
			if _, ok := vals.Data["token"]; !ok && strings.Contains(tt.src, "token") {
				continue
			}
			got, gotErr := vt.exec(vals)
			var want strings.Builder
			wantErr := vt.tmpl.Execute(&want, vals)
			if got != want.String() || (gotErr == nil) != (wantErr == nil) {
				t.Errorf("%q: exec = %q, %v; template = %q, %v", tt.src, got, gotErr, want.String(), wantErr)
			}
		}
	}
}

func TestApplyErrorsHideSecrets(t *testing.T) {
	const secret = "sk-SUPER-SECRET-123"
	tests := []struct {
		name, inject string
		v            Values
	}{
		{"missing data key, fast path", `{header: Authorization, value: "{{ .Data.nope }}"}`,
			Values{Value: secret, Data: map[string]string{"a": secret}}},
		{"missing data key, template", `{header: Authorization, value: "{{ .Value }} {{ .Data.nope }}"}`,
			Values{Value: secret, Data: map[string]string{"a": secret}}},
		// text/template puts the value it choked on into its error: index of a string.
		{"value in template error", `{header: Authorization, value: '{{ index .Value 99 }}'}`,
			Values{Value: secret}},
		{"value in call error", `{header: Authorization, value: '{{ slice .Value 3 1 }}'}`,
			Values{Value: secret}},
		{"range quotes the value", `{header: Authorization, value: '{{ range .Value }}{{ end }}'}`,
			Values{Value: secret}},
		{"call quotes an escaped value", `{header: Authorization, value: '{{ urlquery .Value | call }}'}`,
			Values{Value: secret + "/x y"}},
		{"call quotes the data map", `{header: Authorization, value: '{{ print .Data | call }}'}`,
			Values{Data: map[string]string{"a": secret + "\t"}}},
		{"field of a string", `{header: Authorization, value: '{{ .Data.a.b }}'}`,
			Values{Data: map[string]string{"a": secret}}},
		{"basic with colon in user", `{header: Authorization, value: '{{ basic .Data.u .Data.p }}'}`,
			Values{Data: map[string]string{"u": secret + ":x", "p": secret}}},
		{"basic with colon, template path", `{header: Authorization, value: 'x{{ basic .Data.u .Data.p }}{{ "" }}'}`,
			Values{Data: map[string]string{"u": secret + ":x", "p": secret}}},
		{"newline in header value", `{header: Authorization, value: "Bearer {{ .Value }}"}`,
			Values{Value: secret + "\r\nX-Evil: 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ruleFor(t, tt.inject, "")
			req := httptest.NewRequest("GET", "https://api.example.com/", nil)
			req.Header.Set("Authorization", "Bearer placeholder")
			err := r.Apply(req, tt.v)
			if !errors.Is(err, ErrInject) {
				t.Fatalf("Apply error = %v, want ErrInject", err)
			}
			t.Logf("error: %v", err)
			for e := error(err); e != nil; e = errors.Unwrap(e) {
				if strings.Contains(e.Error(), "SECRET") {
					t.Errorf("error (or one it wraps) shows the secret: %v", e)
				}
			}
		})
	}
}

func TestValuesRedacted(t *testing.T) {
	v := Values{Value: "sk-secret", Data: map[string]string{"password": "hunter2"}}
	j, _ := json.Marshal(v)
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "values", v)
	for _, s := range []string{fmt.Sprint(v), fmt.Sprintf("%+v %#v %q %s", v, v, v, v), string(j), b.String()} {
		if strings.Contains(s, "secret") || strings.Contains(s, "hunter2") {
			t.Errorf("printed Values shows a secret: %s", s)
		}
	}
}

func TestBasicAuthFunc(t *testing.T) {
	got, err := basicAuth("Aladdin", "open sesame")
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte("Aladdin:open sesame")); err != nil || got != want {
		t.Errorf("basicAuth = %q, %v; want %q", got, err, want)
	}
	if _, err := basicAuth("a:b", "c"); err == nil {
		t.Error("basicAuth accepted a user name with ':'")
	}
}

func TestApplyRefusesEmptyValue(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(`
credentials:
  db: {source: env, env: CREDPROXY_RULES_TEST_UNUSED}
rules:
  - name: r
    hosts: [api.example.test]
    credential: db
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "https://api.example.test/", nil)
	req.Header.Set("Authorization", "Bearer placeholder")
	err = cfg.Rules[0].Apply(req, Values{Data: map[string]string{"username": "u", "password": "p"}})
	if !errors.Is(err, ErrInject) || !strings.Contains(err.Error(), "field:") {
		t.Fatalf("Apply with no single value: %v; want ErrInject telling to set field:", err)
	}
}
