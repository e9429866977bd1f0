package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/credproxy/credproxy/internal/testutil"
)

// An upstream 401 drops the lease it answered; the next request acquires a
// fresh one, and the purpose header goes to the audit trail, not upstream.
func TestUpstream401DropsLeaseAndPurposeIsAudited(t *testing.T) {
	var calls atomic.Int32
	e, _, up, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "ok")
	})
	c := e.client(e.ca)
	for i, want := range []int{401, 200} {
		req, _ := http.NewRequest("GET", "https://api.example.test/v1/models", nil)
		req.Header.Set("X-Credproxy-Purpose", "summarise ticket 42")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	for _, r := range up.seen() {
		if v := r.Header.Get("X-Credproxy-Purpose"); v != "" {
			t.Errorf("purpose header reached upstream: %q", v)
		}
	}
	audit := e.audit.String()
	if got := testutil.AuditEvents(audit); got != "lease.created,lease.revoked,lease.created" {
		t.Errorf("audit events %s, want lease.created,lease.revoked,lease.created", got)
	}
	if !strings.Contains(audit, `"reason":"upstream_401"`) || !strings.Contains(audit, `"purpose":"summarise ticket 42"`) {
		t.Errorf("audit lacks reason upstream_401 or the purpose:\n%s", audit)
	}
}

// Many requests from one agent share one leased credential and one
// intercepted connection.
func TestKeepAliveThroughMITMReusesLease(t *testing.T) {
	e, _, up, _ := newEnv(t, "", okHandler)
	c := e.client(e.ca)
	for range 20 {
		resp, err := c.Get("https://api.example.test/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := strings.Count(e.audit.String(), `"event":"lease.created"`); n != 1 {
		t.Errorf("%d leases created for 20 requests, want 1", n)
	}
	if n := len(up.seen()); n != 20 {
		t.Errorf("upstream saw %d requests, want 20", n)
	}
	e.mu.Lock()
	dialled := len(e.dialled)
	e.mu.Unlock()
	if dialled != 1 {
		t.Errorf("proxy dialled the upstream %d times for 20 keep-alive requests, want 1", dialled)
	}
}
