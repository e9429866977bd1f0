package hostile

import (
	"net/http"
	"testing"
)

// pathsProc serves a logging upstream under a /v1/ and /api/v4/ rule with
// methods [GET] and `unmatched: deny`.
func pathsProc(t *testing.T, ip string) (*proc, *upstream) {
	up := okUpstream(t, ip+":0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: "unmatched: deny\n" + credentialsYAML + "rules:\n" +
		bearerRule("api", up.addr, "/v1/, /api/v4/", "    methods: [GET]\n")})
	return p, up
}

// TestEncodedDotSegments sends paths that a decoder resolves into /v1/ (or
// out of it): each is refused with 403 and no request carrying the key
// reaches the upstream.
func TestEncodedDotSegments(t *testing.T) {
	for _, path := range []string{
		"/admin/users/..%2F..%2Fv1/",
		"/admin/x/%2e%2e/%2e%2e/v1/",
		"/v1/..%2f..%2fadmin",
		"/v1/%2E%2E/admin",
		"/v1/.%2e/admin",
		"/v1/..%5cadmin",
		"/v1/../admin",
		"/v1/%2e%2e%2fadmin",
	} {
		t.Run(path, func(t *testing.T) {
			p, up := pathsProc(t, "127.77.4.1")
			resp, body, _ := p.roundTrip(t, up.addr, get(up.addr, path))
			if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
				t.Errorf("GET %s: expected 403 (or 400) JSON, got %d %q", path, resp.StatusCode, trunc(body))
			} else {
				jsonErrorBody(t, "GET "+path, resp.StatusCode, resp.Header, body)
			}
			if l := up.sawSecret(keyValue); l != "" {
				t.Errorf("GET %s: expected no request carrying the key upstream; it saw %s", path, l)
			}
		})
	}
}

// TestLowerCaseMethod: `get` is not GET; methods: [GET] must not inject it.
func TestLowerCaseMethod(t *testing.T) {
	p, up := pathsProc(t, "127.77.4.2")
	req := "get /v1/x HTTP/1.1\r\nHost: " + up.addr + "\r\nAuthorization: Bearer placeholder\r\nConnection: close\r\n\r\n"
	resp, body, _ := p.roundTrip(t, up.addr, req)
	t.Logf("lower-case get: status %d", resp.StatusCode)
	if l := up.sawSecret(keyValue); l != "" {
		t.Errorf("method \"get\" against methods: [GET]: expected no injection, the upstream saw %s (proxy answered %d %q)", l, resp.StatusCode, trunc(body))
	}
}

// TestEncodedSlashInjectedVerbatim: a legitimate %2F inside a segment is
// injected and reaches the upstream byte for byte.
func TestEncodedSlashInjectedVerbatim(t *testing.T) {
	p, up := pathsProc(t, "127.77.4.3")
	const path = "/api/v4/projects/group%2Fproject"
	resp, body, _ := p.roundTrip(t, up.addr, get(up.addr, path))
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: expected 200, got %d %q", path, resp.StatusCode, trunc(body))
	}
	seen := up.seen()
	if len(seen) != 1 || seen[0].URI != path || !injectedKey(seen[0].Header) {
		t.Errorf("GET %s: expected the upstream to see exactly that path with the key injected; it saw %+v", path, uris(seen))
	}
}

func uris(rs []seenReq) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Method+" "+r.URI)
	}
	return out
}
