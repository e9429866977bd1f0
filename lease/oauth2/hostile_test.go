package oauth2_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/oauth2"
)

// Hostile token endpoints: these are fakes on purpose (no real provider
// misbehaves on demand), each an HTTPS server on 127.0.0.1.

const hostileSecret = "sk-test-hostile-client-secret-4f9a2c"

// hostileSource is a client_credentials source for the endpoint h, with a
// short timeout, logging into logs.
func hostileSource(t *testing.T, h http.HandlerFunc, timeout time.Duration, logs io.Writer) (*oauth2.Source, *httptest.Server) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := writeFile(t, dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})), 0o600)
	src, err := oauth2.New(oauth2.Config{
		Name: "idp", TokenURL: srv.URL + "/token", ClientID: "client",
		ClientSecretFile: writeFile(t, dir, "secret", hostileSecret, 0o600),
		RevocationURL:    srv.URL + "/revoke", CAFile: ca, Timeout: timeout,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return src, srv
}

// An error page that echoes the request (client secret included, in the
// body, the description and the error code) reaches neither the error, the
// agent's message, the logs nor the audit trail.
func TestErrorBodyWithSecretNeverLeaks(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
	}{
		{"json", func(w http.ResponseWriter, r *http.Request) {
			_, secret, _ := r.BasicAuth()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]string{"error": secret, "error_description": "bad secret " + secret,
				"error_uri": "https://idp.example/" + secret})
		}},
		{"html", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>upstream said: Authorization: "+r.Header.Get("Authorization")+" secret="+hostileSecret+"</html>")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testutil.SyncBuffer{}
			src, _ := hostileSource(t, tc.h, 5*time.Second, logs)
			e := newManager(t, src, lease.Policy{TTL: time.Minute, AutoRenew: true, IdleTimeout: time.Minute})
			_, err := e.M.Get(context.Background(), "api", "agent", lease.Use{Rule: "r"})
			if err == nil {
				t.Fatal("Get succeeded against a failing endpoint")
			}
			pub := lease.PublicMessage(err)
			if !strings.Contains(pub, `credential "api"`) || !strings.Contains(pub, "store idp") {
				t.Errorf("public message %q; want it to name the credential and the source", pub)
			}
			basic := "Basic " // the header's encoded form
			notIn(t, []string{hostileSecret, "Y2xpZW50OnNrLXRlc3Q"}, map[string]string{
				"error": err.Error(), "public": pub, "logs": logs.String() + e.Logs.String(), "audit": e.Audit.String()})
			if strings.Contains(err.Error(), basic) || strings.Contains(err.Error(), "<html>") {
				t.Errorf("the error quotes the provider's body: %v", err)
			}
		})
	}
}

// A token endpoint that answers with an endless body is cut off at a bound.
func TestHugeTokenResponseBounded(t *testing.T) {
	var written atomic.Int64
	src, _ := hostileSource(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"`)
		chunk := []byte(strings.Repeat("a", 64<<10))
		for range 1600 { // 100 MiB, unless the client stops reading
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}, 10*time.Second, io.Discard)
	_, err := src.Acquire(context.Background(), lease.Request{Credential: "api"})
	if err == nil || !strings.Contains(err.Error(), "larger than 64 KiB") {
		t.Fatalf("acquire: %v; want the body cut at 64 KiB", err)
	}
	if len(err.Error()) > 400 {
		t.Errorf("error of %d bytes quotes the body", len(err.Error()))
	}
}

// A hung token endpoint fails the call at the source's timeout, and the
// agent is told the source timed out.
func TestHungTokenEndpointTimesOut(t *testing.T) {
	release := make(chan struct{})
	src, _ := hostileSource(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, 300*time.Millisecond, io.Discard)
	defer close(release)
	e := newManager(t, src, lease.Policy{TTL: time.Minute, AutoRenew: true, IdleTimeout: time.Minute})
	done := make(chan error, 1)
	go func() {
		_, err := e.M.Get(context.Background(), "api", "agent", lease.Use{Rule: "r"})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get: %v; want a deadline exceeded", err)
		}
		if pub := lease.PublicMessage(err); !strings.Contains(pub, "timed out") {
			t.Errorf("public message %q; want a timeout", pub)
		}
	case <-time.After(10 * time.Second): // a bound on a hang, not a timing assertion
		t.Fatal("Get still waiting on a hung token endpoint after 10s (timeout 300ms)")
	}
}

// A token response without expires_in gets the credential's TTL.
func TestTokenWithoutExpiryUsesCredentialTTL(t *testing.T) {
	src, _ := hostileSource(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"sk-test-noexpiry-token","token_type":"bearer"}`)
	}, 5*time.Second, io.Discard)
	e := newManager(t, src, lease.Policy{TTL: 90 * time.Second, AutoRenew: true, IdleTimeout: time.Hour})
	if tk := e.Get(t); tk.Value != "sk-test-noexpiry-token" {
		t.Fatal("wrong token")
	}
	in := e.M.List()[0]
	if got := in.Expires.Sub(in.Issued); got != 90*time.Second {
		t.Errorf("lease term %v; want the credential's ttl 90s for a token without expires_in", got)
	}
}

// expires_in is the provider's: a short one bounds the lease (counted from
// before the request), an absurd one (that would overflow a Duration) or a
// negative one never makes a lease live longer than the credential's ttl,
// and a negative one is refused as an expired token.
func TestHostileExpiresIn(t *testing.T) {
	for _, tc := range []struct {
		expiresIn string
		term      time.Duration // 0: acquisition refused
	}{
		{"30", 30 * time.Second},
		{"1000000000000000", 90 * time.Second},
		{"9223372036854775807", 90 * time.Second},
		{"-5", 0},
	} {
		src, _ := hostileSource(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"sk-test-expiresin-token","token_type":"bearer","expires_in":`+tc.expiresIn+`}`)
		}, 5*time.Second, io.Discard)
		e := newManager(t, src, lease.Policy{TTL: 90 * time.Second, AutoRenew: true, IdleTimeout: time.Hour})
		_, err := e.M.Get(t.Context(), "api", "agent", lease.Use{Rule: "r"})
		if tc.term == 0 {
			if err == nil || !strings.Contains(err.Error(), "expired token") {
				t.Errorf("expires_in %s: %v, want refused as an expired token", tc.expiresIn, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("expires_in %s: %v", tc.expiresIn, err)
		}
		in := e.M.List()[0]
		if got := in.Expires.Sub(in.Issued); got != tc.term {
			t.Errorf("expires_in %s: lease term %v, want %v", tc.expiresIn, got, tc.term)
		}
	}
}

// A redirect from the token endpoint is not followed: it would carry the
// client's credentials to whatever URL the endpoint names.
func TestTokenEndpointRedirectNotFollowed(t *testing.T) {
	var hits atomic.Int32
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer other.Close()
	src, _ := hostileSource(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/steal", http.StatusTemporaryRedirect)
	}, 5*time.Second, io.Discard)
	_, err := src.Acquire(context.Background(), lease.Request{Credential: "api"})
	if err == nil || !strings.Contains(err.Error(), "HTTP 307") {
		t.Fatalf("acquire: %v; want HTTP 307 as a failure", err)
	}
	if hits.Load() != 0 {
		t.Error("the redirect was followed")
	}
}

// An endpoint whose certificate no configured root signs is refused.
func TestTokenEndpointTLSVerified(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("request reached an unverified endpoint")
	}))
	defer srv.Close()
	src, err := oauth2.New(oauth2.Config{Name: "idp", TokenURL: srv.URL, ClientID: "client",
		ClientSecretFile: writeFile(t, t.TempDir(), "secret", hostileSecret, 0o600)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Acquire(context.Background(), lease.Request{Credential: "api"})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("acquire: %v; want a certificate verification failure", err)
	}
}
