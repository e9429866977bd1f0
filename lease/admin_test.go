package lease_test

import (
	"encoding/json"
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
