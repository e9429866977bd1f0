package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
)

const testToken = "admin-token-0123456789abcdef"

// serveAdmin runs the admin handler on a real 127.0.0.1 listener.
func serveAdmin(t *testing.T, o Options) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := httptest.NewUnstartedServer(New(o))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// leases is a lease manager with one credential "openai" on a counting test
// source and a fake clock, behind a control API.
type leases struct {
	m     *lease.Manager
	src   *leasetest.Source
	clock *leasetest.Clock
	audit *testutil.SyncBuffer
	ctl   *control.Control
}

func newLeases(t *testing.T, p lease.Policy, more ...lease.Credential) *leases {
	t.Helper()
	l := &leases{src: leasetest.NewSource(), clock: leasetest.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
		audit: &testutil.SyncBuffer{}}
	creds := append([]lease.Credential{{Name: "openai", SourceName: "test", Source: l.src, Policy: p}}, more...)
	l.m = lease.NewManager(creds, lease.Options{Clock: l.clock, Audit: lease.NewAuditor(l.audit), Rand: func() float64 { return 0.5 }})
	t.Cleanup(func() { _ = l.m.Shutdown(context.Background()) })
	l.ctl = control.New(control.Options{Leases: l.m})
	return l
}

var testPolicy = lease.Policy{TTL: 10 * time.Minute, MaxTTL: time.Hour, RenewBeforeExpiry: 2 * time.Minute,
	IdleTimeout: 5 * time.Minute, AutoRenew: true}

func (l *leases) get(t *testing.T, identity string) lease.Ticket {
	t.Helper()
	tk, err := l.m.Get(context.Background(), "openai", identity, lease.Use{Rule: "openai-chat"})
	if err != nil {
		t.Fatalf("Get(openai, %q): %v", identity, err)
	}
	return tk
}

// events decodes the audit trail.
func (l *leases) events(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(strings.NewReader(l.audit.String()))
	for {
		var e map[string]any
		if err := dec.Decode(&e); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("audit trail is not JSON lines: %v\n%s", err, l.audit.String())
		}
		out = append(out, e)
	}
}

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

// get fetches url and returns status, content type and body.
func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	status, hdr, body := do(t, http.MethodGet, url, "", "")
	return status, hdr.Get("Content-Type"), body
}

// do sends method url with the Authorization header auth ("" for none) and
// body ("" for none), and returns status, headers and body.
func do(t *testing.T, method, url, auth, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// getAuth is get with an Authorization header.
func getAuth(t *testing.T, url, auth string) (int, string, string) {
	t.Helper()
	status, hdr, body := do(t, http.MethodGet, url, auth, "")
	return status, hdr.Get("Content-Type"), body
}

// getJSON fetches url, checks status and JSON content type, and decodes.
func getJSON(t *testing.T, url string, wantStatus int) map[string]any {
	t.Helper()
	status, ctype, body := get(t, url)
	if status != wantStatus {
		t.Errorf("GET %s: status %d, want %d; body %q", url, status, wantStatus, body)
	}
	if ctype != "application/json" && ctype != "application/problem+json" {
		t.Errorf("GET %s: content type %q, want application/json or application/problem+json", url, ctype)
	}
	return decodeObject(t, body)
}

// wantProblem checks an admin error: problem+json whose type is
// urn:credproxy:problem:slug, with status and a detail equal to error.
func wantProblem(t *testing.T, what string, status int, hdr http.Header, body string, wantStatus int, slug string) map[string]any {
	t.Helper()
	if status != wantStatus || hdr.Get("Content-Type") != "application/problem+json" {
		t.Errorf("%s: %d %q %s, want %d application/problem+json", what, status, hdr.Get("Content-Type"), body, wantStatus)
		return nil
	}
	p := decodeObject(t, body)
	if p["type"] != "urn:credproxy:problem:"+slug || p["status"] != float64(wantStatus) || p["detail"] == "" || p["detail"] != p["error"] || p["title"] == "" {
		t.Errorf("%s: problem %s, want type urn:credproxy:problem:%s, status %d, a title, detail == error", what, body, slug, wantStatus)
	}
	return p
}

func decodeObject(t *testing.T, body string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", body, err)
	}
	return v
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
