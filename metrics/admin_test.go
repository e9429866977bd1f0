package metrics

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCA returns a self-signed CA certificate and its private key, both PEM.
func testCA(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "credproxy test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// getJSON fetches url, checks status and JSON content type, and decodes.
func getJSON(t *testing.T, url string, wantStatus int) map[string]string {
	t.Helper()
	status, ctype, body := get(t, url)
	if status != wantStatus {
		t.Errorf("GET %s: status %d, want %d; body %q", url, status, wantStatus, body)
	}
	if ctype != "application/json" {
		t.Errorf("GET %s: content type %q, want application/json", url, ctype)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("GET %s: body %q is not a JSON object of strings: %v", url, body, err)
	}
	return v
}

func TestHealthz(t *testing.T) {
	srv := serveAdmin(t, AdminOptions{Metrics: New()})
	if got := getJSON(t, srv.URL+"/healthz", http.StatusOK); got["status"] != "ok" {
		t.Errorf("/healthz = %v, want status ok", got)
	}
}

func TestReadyz(t *testing.T) {
	var notReady atomic.Bool
	srv := serveAdmin(t, AdminOptions{Metrics: New(), Ready: func() error {
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
	srv := serveAdmin(t, AdminOptions{Metrics: New()})
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
			srv := serveAdmin(t, AdminOptions{Metrics: New(), CAPEM: func() []byte { return given }})
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
			srv := serveAdmin(t, AdminOptions{Metrics: New(), CAPEM: f})
			getJSON(t, srv.URL+"/ca.pem", http.StatusNotFound)
			if _, _, body := get(t, srv.URL+"/ca.pem"); bytes.Contains([]byte(body), []byte("PRIVATE KEY")) {
				t.Errorf("/ca.pem leaked private key material: %s", body)
			}
		})
	}
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	off := serveAdmin(t, AdminOptions{Metrics: New()})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		getJSON(t, off.URL+p, http.StatusNotFound)
	}
	on := serveAdmin(t, AdminOptions{Metrics: New(), Pprof: true, Token: testToken})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap?debug=1"} {
		if status, _, body := getAuth(t, on.URL+p, "Bearer "+testToken); status != http.StatusOK {
			t.Errorf("GET %s with pprof on: status %d, want 200; body %q", p, status, body)
		}
	}
}

func TestExtraRoutesMounted(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("leases:" + r.URL.Path))
	})
	srv := serveAdmin(t, AdminOptions{Metrics: New(), Token: testToken, Extra: map[string]http.Handler{"/leases": h, "/leases/": h}})
	for _, p := range []string{"/leases", "/leases/abc"} {
		status, _, body := getAuth(t, srv.URL+p, "Bearer "+testToken)
		if status != http.StatusOK || body != "leases:"+p {
			t.Errorf("GET %s: %d %q, want 200 %q", p, status, body, "leases:"+p)
		}
	}
}

func TestUnknownPathIs404JSON(t *testing.T) {
	srv := serveAdmin(t, AdminOptions{Metrics: New()})
	for _, p := range []string{"/", "/nope", "/metrics/x", "/leases"} {
		if got := getJSON(t, srv.URL+p, http.StatusNotFound); got["error"] != "not found" {
			t.Errorf("GET %s = %v, want error not found", p, got)
		}
	}
}

func TestNilMetricsServesRuntimeMetrics(t *testing.T) {
	fams := scrape(t, serveAdmin(t, AdminOptions{}))
	if fams["go_goroutines"] == nil {
		t.Error("/metrics with nil Metrics: go_goroutines missing")
	}
}

const testToken = "admin-token-0123456789abcdef"

// leasesStub stands in for lease.AdminHandler: it answers 200 to both routes
// and counts the requests that got through.
func leasesStub(hits *atomic.Int32) map[string]http.Handler {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		writeJSON(w, http.StatusOK, map[string]string{"path": r.URL.Path})
	})
	return map[string]http.Handler{"/leases": h, "/leases/": h}
}

func TestAdminTokenGuardsLeaseRoutes(t *testing.T) {
	var hits atomic.Int32
	srv := serveAdmin(t, AdminOptions{Metrics: New(), Token: testToken, Extra: leasesStub(&hits)})
	routes := []struct{ method, path string }{{"GET", "/leases"}, {"POST", "/leases/cpl_1/revoke"}}
	for _, r := range routes {
		for _, tc := range []struct {
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
		} {
			before := hits.Load()
			status, hdr, body := do(t, r.method, srv.URL+r.path, tc.auth)
			if status != tc.want || hdr.Get("Content-Type") != "application/json" {
				t.Errorf("%s %s with %s: %d %q %s, want %d JSON", r.method, r.path, tc.name, status, hdr.Get("Content-Type"), body, tc.want)
			}
			if passed := hits.Load() != before; passed != (tc.want == http.StatusOK) {
				t.Errorf("%s %s with %s: reached the lease handler = %v", r.method, r.path, tc.name, passed)
			}
			if tc.want == http.StatusUnauthorized && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with %s: WWW-Authenticate %q, want Bearer", r.method, r.path, tc.name, hdr.Get("WWW-Authenticate"))
			}
		}
	}
}

func TestAdminWithoutTokenRefusesLeaseRoutes(t *testing.T) {
	var hits atomic.Int32
	srv := serveAdmin(t, AdminOptions{Metrics: New(), Pprof: true, Extra: leasesStub(&hits)})
	for _, r := range []struct{ method, path string }{{"GET", "/leases"}, {"POST", "/leases/cpl_1/revoke"}, {"GET", "/debug/pprof/"}} {
		for _, auth := range []string{"", "Bearer ", "Bearer anything"} {
			status, _, body := do(t, r.method, srv.URL+r.path, auth)
			if status != http.StatusForbidden || !strings.Contains(body, "admin.tokenFile") {
				t.Errorf("%s %s (auth %q) with no token configured: %d %s, want 403 naming admin.tokenFile", r.method, r.path, auth, status, body)
			}
		}
	}
	if hits.Load() != 0 {
		t.Errorf("the lease handler was reached %d times with no token configured", hits.Load())
	}
}

func TestAdminOpenRoutesNeedNoToken(t *testing.T) {
	certPEM, _ := testCA(t)
	for _, token := range []string{"", testToken} {
		srv := serveAdmin(t, AdminOptions{Metrics: New(), Token: token, CAPEM: func() []byte { return certPEM }})
		for _, p := range []string{"/metrics", "/healthz", "/readyz", "/ca.pem"} {
			if status, _, body := get(t, srv.URL+p); status != http.StatusOK {
				t.Errorf("GET %s without a token (token configured: %v): %d %q, want 200", p, token != "", status, body)
			}
		}
	}
}
