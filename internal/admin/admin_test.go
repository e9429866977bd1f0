package admin

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/credproxy/credproxy/metrics"
)

func TestHealthz(t *testing.T) {
	srv := serveAdmin(t, Options{Metrics: metrics.New()})
	if got := getJSON(t, srv.URL+"/healthz", http.StatusOK); got["status"] != "ok" {
		t.Errorf("/healthz = %v, want status ok", got)
	}
}

func TestReadyz(t *testing.T) {
	var notReady atomic.Bool
	srv := serveAdmin(t, Options{Metrics: metrics.New(), Ready: func() error {
		if notReady.Load() {
			return errors.New("draining")
		}
		return nil
	}})
	if got := getJSON(t, srv.URL+"/readyz", http.StatusOK); got["status"] != "ready" {
		t.Errorf("/readyz while ready = %v, want status ready", got)
	}
	notReady.Store(true)
	got := getJSON(t, srv.URL+"/readyz", http.StatusServiceUnavailable)
	if got["status"] != "not ready" || got["error"] != "draining" {
		t.Errorf(`/readyz while not ready = %v, want {"status":"not ready","error":"draining"}`, got)
	}
}

func TestReadyzWithoutReadyFuncIsReady(t *testing.T) {
	srv := serveAdmin(t, Options{Metrics: metrics.New()})
	getJSON(t, srv.URL+"/readyz", http.StatusOK)
}

func TestCAPEMServesOnlyTheCertificate(t *testing.T) {
	certPEM, keyPEM := testCA(t)
	for name, given := range map[string][]byte{
		"cert":          certPEM,
		"cert+key":      append(append([]byte{}, certPEM...), keyPEM...),
		"key+cert+text": append(append([]byte("comment\n"), keyPEM...), certPEM...),
	} {
		t.Run(name, func(t *testing.T) {
			srv := serveAdmin(t, Options{Metrics: metrics.New(), CAPEM: func() []byte { return given }})
			status, ctype, body := get(t, srv.URL+"/ca.pem")
			if status != http.StatusOK || ctype != "application/x-pem-file" {
				t.Fatalf("/ca.pem: status %d, type %q; want 200 application/x-pem-file", status, ctype)
			}
			if body != string(certPEM) {
				t.Errorf("/ca.pem body:\n%s\nwant exactly the certificate:\n%s", body, certPEM)
			}
			if strings.Contains(body, "PRIVATE KEY") {
				t.Errorf("/ca.pem leaked private key material:\n%s", body)
			}
		})
	}
}

func TestCAPEMAbsent(t *testing.T) {
	_, keyPEM := testCA(t)
	for name, f := range map[string]func() []byte{
		"nil func": nil,
		"empty":    func() []byte { return nil },
		"key only": func() []byte { return keyPEM },
		"not PEM":  func() []byte { return []byte("hello") },
	} {
		t.Run(name, func(t *testing.T) {
			srv := serveAdmin(t, Options{Metrics: metrics.New(), CAPEM: f})
			status, hdr, body := do(t, "GET", srv.URL+"/ca.pem", "", "")
			wantProblem(t, "/ca.pem", status, hdr, body, http.StatusNotFound, "admin-not-found")
			if bytes.Contains([]byte(body), []byte("PRIVATE KEY")) {
				t.Errorf("/ca.pem leaked private key material: %s", body)
			}
		})
	}
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	off := serveAdmin(t, Options{Metrics: metrics.New()})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		getJSON(t, off.URL+p, http.StatusNotFound)
	}
	on := serveAdmin(t, Options{Metrics: metrics.New(), Pprof: true, Token: testToken})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap?debug=1"} {
		if status, _, body := getAuth(t, on.URL+p, "Bearer "+testToken); status != http.StatusOK {
			t.Errorf("GET %s with pprof on: status %d, want 200; body %q", p, status, body)
		}
	}
}

func TestUnknownPathIs404Problem(t *testing.T) {
	srv := serveAdmin(t, Options{Metrics: metrics.New()})
	for _, p := range []string{"/", "/nope", "/metrics/x", "/leases"} {
		status, hdr, body := do(t, "GET", srv.URL+p, "", "")
		if got := wantProblem(t, "GET "+p, status, hdr, body, http.StatusNotFound, "admin-not-found"); got != nil && got["error"] != "not found" {
			t.Errorf("GET %s = %v, want error not found", p, got)
		}
	}
}

func TestWrongMethodIs405Problem(t *testing.T) {
	l := newLeases(t, testPolicy)
	srv := serveAdmin(t, Options{Metrics: metrics.New(), Token: testToken, Control: l.ctl})
	for _, r := range []struct{ method, path, allow string }{
		{"GET", "/leases/cpl_1/revoke", "POST"},
		{"DELETE", "/leases", "GET, HEAD"},
		{"POST", "/healthz", "GET, HEAD"},
	} {
		status, hdr, body := do(t, r.method, srv.URL+r.path, "Bearer "+testToken, "")
		wantProblem(t, r.method+" "+r.path, status, hdr, body, http.StatusMethodNotAllowed, "admin-method-not-allowed")
		if hdr.Get("Allow") != r.allow {
			t.Errorf("%s %s: Allow %q, want %q", r.method, r.path, hdr.Get("Allow"), r.allow)
		}
	}
}

func TestNilMetricsServesRuntimeMetrics(t *testing.T) {
	srv := serveAdmin(t, Options{})
	if status, _, body := get(t, srv.URL+"/metrics"); status != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics with nil Metrics: %d, want 200 with go_goroutines", status)
	}
}

var authCases = []struct {
	name, auth string
	want       int
}{
	{"no token", "", http.StatusUnauthorized},
	{"wrong token", "Bearer " + strings.Repeat("x", len(testToken)), http.StatusUnauthorized},
	{"token of another length", "Bearer " + testToken[:5], http.StatusUnauthorized},
	{"token with a suffix", "Bearer " + testToken + "x", http.StatusUnauthorized},
	{"token without scheme", testToken, http.StatusUnauthorized},
	{"basic scheme", "Basic " + testToken, http.StatusUnauthorized},
	{"right token", "Bearer " + testToken, http.StatusOK},
	{"right token, lower-case scheme", "bearer " + testToken, http.StatusOK},
}

func TestAdminTokenGuardsLeaseRoutes(t *testing.T) {
	l := newLeases(t, testPolicy)
	tk := l.get(t, "agent-a")
	srv := serveAdmin(t, Options{Metrics: metrics.New(), Token: testToken, Control: l.ctl})
	for _, tc := range authCases {
		status, hdr, body := do(t, "GET", srv.URL+"/leases", tc.auth, "")
		if tc.want == http.StatusOK {
			if status != http.StatusOK || !strings.Contains(body, tk.LeaseID) {
				t.Errorf("GET /leases with %s: %d %s, want 200 listing %s", tc.name, status, body, tk.LeaseID)
			}
			continue
		}
		wantProblem(t, "GET /leases with "+tc.name, status, hdr, body, tc.want, "admin-unauthorized")
		if strings.Contains(body, tk.LeaseID) {
			t.Errorf("GET /leases with %s: lists the lease: %s", tc.name, body)
		}
		if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("GET /leases with %s: WWW-Authenticate %q, want Bearer", tc.name, hdr.Get("WWW-Authenticate"))
		}
		status, hdr, body = do(t, "POST", srv.URL+"/leases/"+tk.LeaseID+"/revoke", tc.auth, "")
		wantProblem(t, "POST revoke with "+tc.name, status, hdr, body, tc.want, "admin-unauthorized")
		if n := len(l.m.List()); n != 1 {
			t.Fatalf("POST revoke with %s: %d leases held, want the lease still held", tc.name, n)
		}
	}
	if status, _, body := do(t, "POST", srv.URL+"/leases/"+tk.LeaseID+"/revoke", "Bearer "+testToken, ""); status != http.StatusOK {
		t.Fatalf("POST revoke with the token: %d %s, want 200", status, body)
	}
}

func TestAdminWithoutTokenRefusesLeaseRoutes(t *testing.T) {
	l := newLeases(t, testPolicy)
	l.get(t, "agent-a")
	srv := serveAdmin(t, Options{Metrics: metrics.New(), Pprof: true, Control: l.ctl})
	for _, r := range []struct{ method, path string }{{"GET", "/leases"}, {"POST", "/leases/cpl_1/revoke"}, {"GET", "/debug/pprof/"}} {
		for _, auth := range []string{"", "Bearer ", "Bearer anything"} {
			status, hdr, body := do(t, r.method, srv.URL+r.path, auth, "")
			if p := wantProblem(t, r.method+" "+r.path, status, hdr, body, http.StatusForbidden, "admin-disabled"); p != nil && !strings.Contains(body, "admin.tokenFile") {
				t.Errorf("%s %s (auth %q) with no token configured: %s, want 403 naming admin.tokenFile", r.method, r.path, auth, body)
			}
		}
	}
	if n := len(l.m.List()); n != 1 {
		t.Errorf("%d leases held after refused calls, want 1", n)
	}
}

func TestAdminOpenRoutesNeedNoToken(t *testing.T) {
	certPEM, _ := testCA(t)
	for _, token := range []string{"", testToken} {
		srv := serveAdmin(t, Options{Metrics: metrics.New(), Token: token, CAPEM: func() []byte { return certPEM }})
		for _, p := range []string{"/metrics", "/healthz", "/readyz", "/ca.pem"} {
			if status, _, body := get(t, srv.URL+p); status != http.StatusOK {
				t.Errorf("GET %s without a token (token configured: %v): %d %q, want 200", p, token != "", status, body)
			}
		}
	}
}
