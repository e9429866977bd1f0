package vaulttest

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// FakeEchoVault is not Vault: it is a hostile stand-in for one (or for a
// reverse proxy in front of one) on 127.0.0.1 that answers every request
// with an error quoting the whole request, headers (X-Vault-Token included)
// and body (a login's secret_id or JWT). It tests that no store text reaches
// the agent, the log or the audit trail unmasked.
type FakeEchoVault struct {
	Addr     string       // http://127.0.0.1:<port>
	Requests atomic.Int32 // requests answered
	status   int
	json     bool
}

// StartFakeEchoVault answers status with an HTML page, or (asJSON) with
// Vault's JSON error shape {"errors": [...]} whose message quotes the
// request. It stops when the test ends.
func StartFakeEchoVault(t testing.TB, status int, asJSON bool) *FakeEchoVault {
	t.Helper()
	f := &FakeEchoVault{status: status, json: asJSON}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.Addr = srv.URL
	return f
}

func (f *FakeEchoVault) serve(w http.ResponseWriter, r *http.Request) {
	f.Requests.Add(1)
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", r.Method, r.URL)
	_ = r.Header.Write(&b)
	fmt.Fprintf(&b, "\n%s", body)
	if f.json {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.status)
		_ = json.NewEncoder(w).Encode(map[string][]string{"errors": {"bad request: " + b.String()}})
		return
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(f.status)
	fmt.Fprintf(w, "<html><body><h1>%d Bad Gateway</h1><pre>%s</pre></body></html>", f.status, html.EscapeString(b.String()))
}

// LeaseTTL asks Vault (sys/leases/lookup) for the TTL left on a lease.
func (s *Server) LeaseTTL(t testing.TB, leaseID string) time.Duration {
	t.Helper()
	sec := s.Write(t, "sys/leases/lookup", map[string]any{"lease_id": leaseID})
	if sec == nil {
		t.Fatalf("vaulttest: lookup lease %s: empty response", leaseID)
	}
	n, ok := sec.Data["ttl"].(json.Number)
	if !ok {
		t.Fatalf("vaulttest: lookup lease %s: no ttl in %v", leaseID, sec.Data)
	}
	secs, err := n.Int64()
	if err != nil {
		t.Fatalf("vaulttest: lookup lease %s: ttl %v: %v", leaseID, n, err)
	}
	return time.Duration(secs) * time.Second
}
