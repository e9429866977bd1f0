package hostile

import (
	"encoding/json"
	"net/http"
	"testing"
)

// leaseIDs lists the held leases' ids through the admin API.
func leaseIDs(t *testing.T, p *proc) []string {
	t.Helper()
	st, body, err := p.admin("GET", "/leases", true)
	if err != nil || st != 200 {
		t.Fatalf("GET /leases with the admin token: expected 200, got %d %q %v", st, trunc(body), err)
	}
	p.record("admin /leases", body)
	var list []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("GET /leases: expected a JSON list, got %q: %v", trunc(body), err)
	}
	var ids []string
	for _, l := range list {
		ids = append(ids, l.ID)
	}
	return ids
}

// adminProc runs credproxy with `unmatched: tunnel`, so that only an
// explicit refusal keeps the agent off the admin and proxy ports.
func adminProc(t *testing.T) (*proc, *upstream) {
	up := okUpstream(t, "127.77.3.1:0")
	p := startProc(t, procOpts{Env: secretsEnv, YAML: "unmatched: tunnel\n" + credentialsYAML + "rules:\n" + bearerRule("api", up.addr, "", "")})
	return p, up
}

// TestAdminFromAgentAbsoluteForm: curl -x proxy http://ADMIN/leases (and
// the proxy's own port) is refused, never proxied to credproxy itself.
func TestAdminFromAgentAbsoluteForm(t *testing.T) {
	p, _ := adminProc(t)
	for _, u := range []string{"http://" + p.adminAddr + "/leases", "http://" + p.adminAddr + "/metrics", "http://" + p.proxyAddr + "/leases"} {
		code, body := p.curl(t, "-H", "Authorization: Bearer "+adminToken, u)
		if code != http.StatusForbidden {
			t.Errorf("curl -x proxy %s: expected 403 from the proxy, got %d %q", u, code, trunc(body))
			continue
		}
		jsonErrorBody(t, "curl "+u, code, nil, body)
	}
}

// TestAdminFromAgentConnect: CONNECT to the admin and proxy ports is refused.
func TestAdminFromAgentConnect(t *testing.T) {
	p, _ := adminProc(t)
	for _, target := range []string{p.adminAddr, p.proxyAddr, "localhost:" + portOf(t, p.adminAddr)} {
		_, resp, body := p.connect(t, target)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("CONNECT %s from the agent: expected 403, got %d %q", target, resp.StatusCode, trunc(body))
		}
	}
}

// TestAdminDirectNeedsToken: the lease API answers only with the token;
// /healthz, /readyz, /ca.pem and /metrics stay open.
func TestAdminDirectNeedsToken(t *testing.T) {
	p, up := adminProc(t)
	if resp, body, _ := p.roundTrip(t, up.addr, get(up.addr, "/v1/x")); resp.StatusCode != 200 {
		t.Fatalf("injected request to create a lease: expected 200, got %d %q", resp.StatusCode, trunc(body))
	}
	for _, c := range []struct{ method, path string }{{"GET", "/leases"}, {"POST", "/leases/cpl_0000000000000000/revoke"}} {
		st, body, err := p.admin(c.method, c.path, false)
		if err != nil || (st != http.StatusUnauthorized && st != http.StatusForbidden) {
			t.Errorf("%s %s without the token: expected 401 or 403, got %d %q %v", c.method, c.path, st, trunc(body), err)
		}
		p.record("admin no token", body)
	}
	req, _ := http.NewRequest("GET", "http://"+p.adminAddr+"/leases", nil)
	req.Header.Set("Authorization", "Bearer wrong-"+adminToken[:8])
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET /leases with a wrong token: expected 401 or 403, got %d", resp.StatusCode)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/ca.pem", "/metrics"} {
		if st, _, err := p.admin("GET", path, false); err != nil || st != 200 {
			t.Errorf("GET %s without the token: expected 200 (open route), got %d %v", path, st, err)
		}
	}
	ids := leaseIDs(t, p)
	if len(ids) != 1 {
		t.Fatalf("GET /leases with the token: expected 1 lease, got %v", ids)
	}
	st, body, err := p.admin("POST", "/leases/"+ids[0]+"/revoke", true)
	if err != nil || st != 200 {
		t.Errorf("POST /leases/%s/revoke with the token: expected 200, got %d %q %v", ids[0], st, trunc(body), err)
	}
}
