package lease_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/lease"
)

func serve(h *harness, method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	lease.AdminHandler(h.m).ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestAdminListAndRevoke(t *testing.T) {
	h := newHarness(t, policy)
	tk := h.get("agent-a")

	rec := serve(h, http.MethodGet, "/leases")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /leases = %d %q, want 200 JSON", rec.Code, rec.Header().Get("Content-Type"))
	}
	if strings.Contains(rec.Body.String(), "sk-test") {
		t.Fatalf("GET /leases shows a secret value: %s", rec.Body.String())
	}
	var infos []lease.Info
	if err := json.Unmarshal(rec.Body.Bytes(), &infos); err != nil || len(infos) != 1 || infos[0].ID != tk.LeaseID {
		t.Fatalf("GET /leases = %s (%v), want one lease %s", rec.Body.String(), err, tk.LeaseID)
	}
	if in := infos[0]; in.SourceLeaseID != "src-1" || in.Credential != "openai" || in.Source != "test" || in.State != "active" {
		t.Fatalf("lease info = %+v, want src-1, openai, test, active", in)
	}

	rec = serve(h, http.MethodPost, "/leases/cpl_0000000000000000/revoke")
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != http.StatusNotFound || err != nil || body["error"] == "" {
		t.Fatalf("revoke of an unknown lease = %d %s, want 404 with a JSON error", rec.Code, rec.Body.String())
	}
	if rec = serve(h, http.MethodGet, "/leases/"+tk.LeaseID+"/revoke"); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET on the revoke endpoint = %d, want 405", rec.Code)
	}

	rec = serve(h, http.MethodPost, "/leases/"+tk.LeaseID+"/revoke")
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "sk-test") {
		t.Fatalf("revoke = %d %s, want 200 and no value", rec.Code, rec.Body.String())
	}
	h.wantCounts(1, 0, 1)
	h.wantEvents("lease.created", "lease.revoked:manual")
	if rec = serve(h, http.MethodGet, "/leases"); strings.TrimSpace(rec.Body.String()) != "[]" {
		t.Fatalf("GET /leases after revoke = %s, want []", rec.Body.String())
	}
	h.wantValue("agent-a", "sk-test-2")
}

func TestAdminRevokeStoreFailure(t *testing.T) {
	h := newHarness(t, policy)
	tk := h.get("agent-a")
	h.src.FailRevoke(errTest("vault: connection refused"))
	rec := serve(h, http.MethodPost, "/leases/"+tk.LeaseID+"/revoke")
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "connection refused") {
		t.Fatalf("revoke with a failing store = %d %s, want 502 naming the error", rec.Code, rec.Body.String())
	}
	if n := len(h.m.List()); n != 0 {
		t.Fatalf("the lease is still held after a revoke the store failed; want it dropped anyway")
	}
	if e := h.events()[1]; e["reason"] != "manual" || e["error"] != "vault: connection refused" {
		t.Fatalf("lease.revoked = %v, want reason manual with the store's error", e)
	}
}

// /leases says whom a lease serves (identity: its scope, "" when shared) and
// who acquired and last used it, as the audit trail does.
func TestAdminListShowsWhoAcquired(t *testing.T) {
	for _, perIdentity := range []bool{false, true} {
		p := policy
		p.PerIdentity = perIdentity
		h := newHarness(t, p)
		h.get("agent-a")
		h.get("agent-b")
		var infos []lease.Info
		rec := serve(h, http.MethodGet, "/leases")
		if err := json.Unmarshal(rec.Body.Bytes(), &infos); err != nil {
			t.Fatalf("GET /leases = %s: %v", rec.Body.String(), err)
		}
		for _, f := range []string{`"acquired_by":"agent-a"`, `"last_used_by"`, `"identity"`} {
			if !strings.Contains(rec.Body.String(), f) {
				t.Errorf("per-identity %v: GET /leases = %s, want it to hold %s", perIdentity, rec.Body.String(), f)
			}
		}
		type who struct{ Identity, AcquiredBy, LastUsedBy string }
		var got []who
		for _, in := range infos {
			got = append(got, who{in.Identity, in.AcquiredBy, in.LastUsedBy})
		}
		want := []who{{"", "agent-a", "agent-b"}}
		if perIdentity {
			want = []who{{"agent-a", "agent-a", "agent-a"}, {"agent-b", "agent-b", "agent-b"}}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("per-identity %v: leases (identity, acquired_by, last_used_by) = %v, want %v", perIdentity, got, want)
		}
		if e := h.events()[0]; e["event"] != "lease.created" || e["identity"] != "agent-a" {
			t.Errorf("per-identity %v: first audit event = %v, want lease.created for agent-a", perIdentity, e)
		}
	}
}
