package proxy

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/rules"
)

// everyRefusal makes one refusal of every kind through its constructor: a
// kind added to problems without a case here fails TestEveryRefusalKind.
func everyRefusal() map[*problem]*refusal {
	d := rules.Dest{Host: "api.example.test", Port: 443}
	return map[*problem]*refusal{
		probBadRequest:        badRequest("bad CONNECT target: missing port"),
		probNotAProxyRequest:  notAProxyRequest(),
		probSchemeNotProxied:  schemeNotProxied("https"),
		probProxyAuthRequired: proxyAuthRequired("proxy authentication failed: unknown client or wrong token"),
		probMisdirected:       misdirected(d),
		probUnmatchedDenied:   unmatchedDenied("GET api.example.test:443/x"),
		probIdentityDenied:    identityDenied("api", "agent-a"),
		probCleartextRefused:  cleartextRefused("api"),
		probAmbiguousPath:     ambiguousPath(d),
		probMethodRefused:     methodRefused(http.MethodTrace),
		probOwnAddress:        ownAddress("api", d),
		probUnsignable:        unsignable("aws", "aws-chunked streaming uploads are not re-signed"),
		probBodyTooLarge:      bodyTooLarge("aws", 10<<20),
		probTaskRequired:      taskRequired("db", "reports", `credential "reports": needs a task and identity "agent-a" has none open`),
		probTaskNotOpen:       taskNotOpen("db", "reports", `credential "reports": task "tsk_1" has ended`),
		probCredUnavailable:   credentialUnavailable("api", "key", `credential "key": store vault unavailable (HTTP 5xx)`),
		probInjectionFailed:   injectionFailed("api", "key"),
		probUpstreamDown:      upstreamUnreachable("api", d, "dial: connection refused"),
		probUpstreamTimeout:   upstreamTimeout("api", d, "i/o timeout"),
		probUpstreamError:     upstreamError("api", d, "tls: failed to verify certificate"),
		probUnscannable:       unscannableEncoding("api", errors.New(`the upstream answered in content encoding "br"`)),
		probTooManyRequests:   tooManyRequests("api", 64),
		probTooManyConns:      tooManyConnections(1024),
		probInternal:          internalError("intercepted request without a route"),
		probClientClosed:      clientClosed("api"),
	}
}

func TestEveryRefusalKind(t *testing.T) {
	all := everyRefusal()
	if len(all) != len(problems) {
		t.Errorf("%d constructors tested, %d kinds in problems: add the new kind to both", len(all), len(problems))
	}
	types, titles := map[string]bool{}, map[string]bool{}
	for _, k := range problems {
		t.Run(k.slug, func(t *testing.T) {
			r, ok := all[k]
			if !ok {
				t.Fatalf("no constructor call for %s in everyRefusal", k.slug)
			}
			if r.kind != k || r.status != k.status || r.outcome != k.outcome {
				t.Errorf("refusal kind %v status %d outcome %q, want %s %d %q", r.kind, r.status, r.outcome, k.slug, k.status, k.outcome)
			}
			typ := k.typeURI()
			if !strings.HasPrefix(typ, "urn:credproxy:problem:") || k.slug == "" || strings.ContainsAny(k.slug, " :/") {
				t.Errorf("type %q: want urn:credproxy:problem: and a one-word slug", typ)
			}
			if k.title == "" || k.status < 400 || k.status > 599 || r.reason == "" {
				t.Errorf("%s: title %q, status %d, reason %q: want all set, status 4xx/5xx", typ, k.title, k.status, r.reason)
			}
			if types[typ] || titles[k.title] {
				t.Errorf("%s: type or title %q is shared with another kind", typ, k.title)
			}
			types[typ], titles[k.title] = true, true
			// Policy refusals are "denied"; what credproxy could not do is "error".
			want := outcomeDenied
			if k.status >= 500 || k.status == statusClientClosed {
				want = outcomeError
			}
			if k.outcome != want {
				t.Errorf("%s: outcome %q, want %q", typ, k.outcome, want)
			}
			checkResponse(t, r)
		})
	}
}

// checkResponse checks the response errorResponse makes of r.
func checkResponse(t *testing.T, r *refusal) {
	t.Helper()
	resp := errorResponse(httptest.NewRequest("GET", "http://api.example.test/x", nil), r)
	data, _ := io.ReadAll(resp.Body)
	for k, want := range map[string]string{
		"Content-Type": "application/problem+json", "Cache-Control": "no-store", "X-Credproxy-Error": "1",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if got, want := resp.Header.Get("Proxy-Authenticate") != "", r.status == http.StatusProxyAuthRequired; got != want {
		t.Errorf("status %d: Proxy-Authenticate present %v, want %v", r.status, got, want)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("body %q: %v", data, err)
	}
	want := map[string]any{
		"type": r.kind.typeURI(), "title": r.kind.title, "status": float64(r.status),
		"detail": r.reason, "error": r.reason,
	}
	if r.rule != "" {
		want["rule"] = r.rule
	}
	if r.credential != "" {
		want["credential"] = r.credential
	}
	if len(m) != len(want) {
		t.Errorf("body %s: %d members, want %v (empty rule and credential left out)", data, len(m), want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("body %s: %s = %v, want %v", data, k, m[k], v)
		}
	}
	if resp.StatusCode != r.status || resp.ContentLength != int64(len(data)) {
		t.Errorf("response %d, length %d; want %d, %d", resp.StatusCode, resp.ContentLength, r.status, len(data))
	}
}

// The README's status table is the agents' reference: every type is in it.
func TestREADMEListsEveryProblemType(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range problems {
		if !strings.Contains(string(readme), "`"+k.slug+"`") {
			t.Errorf("README.md does not list problem type %s", k.typeURI())
		}
	}
}
