package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/metrics"
)

type errTest string

func (e errTest) Error() string { return string(e) }

func TestAdminListAndRevoke(t *testing.T) {
	l := newLeases(t, testPolicy)
	tk := l.get(t, "agent-a")
	srv := serveAdmin(t, Options{Metrics: metrics.New(), Token: testToken, Control: l.ctl})
	auth := "Bearer " + testToken

	status, hdr, body := do(t, "GET", srv.URL+"/leases", auth, "")
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /leases = %d %q, want 200 JSON", status, hdr.Get("Content-Type"))
	}
	if strings.Contains(body, "sk-test") {
		t.Fatalf("GET /leases shows a secret value: %s", body)
	}
	var infos []lease.Info
	if err := json.Unmarshal([]byte(body), &infos); err != nil || len(infos) != 1 || infos[0].ID != tk.LeaseID {
		t.Fatalf("GET /leases = %s (%v), want one lease %s", body, err, tk.LeaseID)
	}
	if in := infos[0]; in.SourceLeaseID != "src-1" || in.Credential != "openai" || in.Source != "test" || in.State != "active" {
		t.Fatalf("lease info = %+v, want src-1, openai, test, active", in)
	}

	status, hdr, body = do(t, "POST", srv.URL+"/leases/cpl_0000000000000000/revoke", auth, "")
	wantProblem(t, "revoke of an unknown lease", status, hdr, body, http.StatusNotFound, "admin-not-found")

	status, _, body = do(t, "POST", srv.URL+"/leases/"+tk.LeaseID+"/revoke", auth, "")
	if status != http.StatusOK || strings.Contains(body, "sk-test") {
		t.Fatalf("revoke = %d %s, want 200 and no value", status, body)
	}
	if ev := l.events(t); len(ev) != 2 || ev[1]["event"] != "lease.revoked" || ev[1]["reason"] != "manual" {
		t.Fatalf("audit = %v, want lease.created then lease.revoked (manual)", ev)
	}
	if _, _, body = do(t, "GET", srv.URL+"/leases", auth, ""); strings.TrimSpace(body) != "[]" {
		t.Fatalf("GET /leases after revoke = %s, want []", body)
	}
	if tk := l.get(t, "agent-a"); tk.Value != "sk-test-2" {
		t.Fatalf("after revoke Get = %q, want a fresh sk-test-2", tk.Value)
	}
}

func TestAdminRevokeStoreFailure(t *testing.T) {
	l := newLeases(t, testPolicy)
	tk := l.get(t, "agent-a")
	srv := serveAdmin(t, Options{Metrics: metrics.New(), Token: testToken, Control: l.ctl})
	l.src.FailRevoke(errTest("vault: connection refused"))
	status, hdr, body := do(t, "POST", srv.URL+"/leases/"+tk.LeaseID+"/revoke", "Bearer "+testToken, "")
	if p := wantProblem(t, "revoke with a failing store", status, hdr, body, http.StatusBadGateway, "admin-store-failed"); p != nil && !strings.Contains(body, "connection refused") {
		t.Fatalf("revoke with a failing store = %s, want 502 naming the error", body)
	}
	if n := len(l.m.List()); n != 0 {
		t.Fatalf("the lease is still held after a revoke the store failed; want it dropped anyway")
	}
	if e := l.events(t)[1]; e["reason"] != "manual" || e["error"] != "vault: connection refused" {
		t.Fatalf("lease.revoked = %v, want reason manual with the store's error", e)
	}
}

// /leases says whom a lease serves (identity: its scope, "" when shared) and
// who acquired and last used it, as the audit trail does.
func TestAdminListShowsWhoAcquired(t *testing.T) {
	for _, perIdentity := range []bool{false, true} {
		p := testPolicy
		p.PerIdentity = perIdentity
		l := newLeases(t, p)
		l.get(t, "agent-a")
		l.get(t, "agent-b")
		srv := serveAdmin(t, Options{Metrics: metrics.New(), Token: testToken, Control: l.ctl})
		_, _, body := do(t, "GET", srv.URL+"/leases", "Bearer "+testToken, "")
		var infos []lease.Info
		if err := json.Unmarshal([]byte(body), &infos); err != nil {
			t.Fatalf("GET /leases = %s: %v", body, err)
		}
		for _, f := range []string{`"acquired_by":"agent-a"`, `"last_used_by"`, `"identity"`} {
			if !strings.Contains(body, f) {
				t.Errorf("per-identity %v: GET /leases = %s, want it to hold %s", perIdentity, body, f)
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
	}
}
