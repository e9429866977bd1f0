package lease_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
)

func TestAuditTrailFieldsAndNoValues(t *testing.T) {
	h := newHarness(t, policy)
	h.src.FailAcquire(errTest("store unavailable"))
	_, err := h.m.Get(context.Background(), "openai", "agent-a", use)
	h.src.FailAcquire(nil)
	h.advance(time.Second)
	tk := h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(8)            // renewed
	h.m.Unauthorized(tk, use) // revoked, upstream_401
	lease.Settle(h.m)
	h.get("agent-a")
	if err := h.m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.wantEvents("lease.failed", "lease.created", "lease.renewed", "lease.revoked:upstream_401",
		"lease.created", "lease.revoked:shutdown")

	for name, text := range map[string]string{"audit": h.audit.String(), "log": h.logs.String(), "error": err.Error()} {
		if strings.Contains(text, "sk-test") {
			t.Errorf("the %s output contains a secret value:\n%s", name, text)
		}
	}
	events := h.events()
	if e := events[0]; e["error"] != "acquire: store unavailable" || e["lease_id"] != "" || e["expires_at"] != nil {
		t.Errorf("lease.failed = %v, want the error text, no lease id, no expiry", e)
	}
	created := events[1]
	want := map[string]any{
		"event": "lease.created", "source_lease_id": "src-1", "credential": "openai", "source": "test",
		"identity": "agent-a", "ttl": 600.0, "purpose": "chat completion", "rule": "openai-chat",
		"expires_at": t0.Add(time.Second + 10*time.Minute).Format(time.RFC3339Nano),
		"time":       t0.Add(time.Second).Format(time.RFC3339Nano),
	}
	for k, v := range want {
		if created[k] != v {
			t.Errorf("lease.created %s = %v, want %v", k, created[k], v)
		}
	}
	if id, _ := created["lease_id"].(string); !regexp.MustCompile(`^cpl_[0-9a-f]{16}$`).MatchString(id) || id != tk.LeaseID {
		t.Errorf("lease.created lease_id = %q, want the ticket's cpl_<16 hex> id %q", id, tk.LeaseID)
	}
	if revoked := events[3]; revoked["lease_id"] != tk.LeaseID || revoked["reason"] != "upstream_401" {
		t.Errorf("lease.revoked = %v, want lease %s, reason upstream_401", revoked, tk.LeaseID)
	}
	for _, e := range events {
		for _, k := range []string{"time", "event", "lease_id", "credential", "source", "identity", "ttl", "purpose", "rule"} {
			if _, ok := e[k]; !ok {
				t.Errorf("audit event %v lacks %q", e, k)
			}
		}
	}
}

func TestNilAuditorDiscards(t *testing.T) {
	h := newHarness(t, policy)
	m := lease.NewManager([]lease.Credential{{Name: "openai", SourceName: "test", Source: h.src, Policy: policy}},
		lease.Options{Clock: h.clock})
	if _, err := m.Get(context.Background(), "openai", "agent-a", use); err != nil {
		t.Fatalf("Get without an auditor: %v", err)
	}
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }
