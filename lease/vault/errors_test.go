package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/credproxy/credproxy/internal/secret"
	"github.com/credproxy/credproxy/internal/vaulttest"
	"github.com/credproxy/credproxy/lease"
)

func TestPolicyDenialIsErrDenied(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.Policy(t, "only-allowed", `path "secret/data/allowed" { capabilities = ["read"] }`)
	s.KVPut(t, "secret", "allowed", map[string]any{"api_key": "sk-test-allowed"})
	s.KVPut(t, "secret", "forbidden", map[string]any{"api_key": "sk-test-forbidden"})
	s.EnablePostgres(t, "x", time.Hour, time.Hour)
	roleID, secretID := s.EnableAppRole(t, "agent", 0, 0, "only-allowed")
	c := newClient(t, s, Auth{Method: MethodAppRole, RoleID: roleID,
		SecretIDFile: vaulttest.WriteFile(t, "secret-id", secretID)})

	acquire(t, c.Source("secret/data/allowed", ""))
	_, err := c.Source("secret/data/forbidden", "").Acquire(t.Context(), reqFor())
	if !errors.Is(err, lease.ErrDenied) {
		t.Fatalf("read outside the policy: want ErrDenied, got %v", err)
	}
	mustErr(t, err, "secret/data/forbidden")
	noValues(t, err, "sk-test-forbidden", "sk-test-allowed", secretID, c.api.Token())

	_, err = c.Source("database/creds/x", "password").Acquire(t.Context(), reqFor())
	if !errors.Is(err, lease.ErrDenied) || err.Error() != "vault: read database/creds/x: permission denied" {
		t.Fatalf(`want ErrDenied "vault: read database/creds/x: permission denied", got %v`, err)
	}
	// A valid token denied by policy is not a reason to log in again.
	if logins, _ := c.counts(); logins != 1 {
		t.Fatalf("policy denials: want 1 login, got %d", logins)
	}
}

func TestBadAppRoleSecretIsErrDenied(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	roleID, secretID := s.EnableAppRole(t, "agent", 0, 0)
	c := newClient(t, s, Auth{Method: MethodAppRole, RoleID: roleID,
		SecretIDFile: vaulttest.WriteFile(t, "secret-id", "not-"+secretID)})
	_, err := c.Source("secret/data/x", "").Acquire(t.Context(), reqFor())
	if !errors.Is(err, lease.ErrDenied) {
		t.Fatalf("login with a wrong secret ID: want ErrDenied, got %v", err)
	}
	mustErr(t, err, "vault: read secret/data/x: login auth/approle/login: ")
	noValues(t, err, secretID)
	t.Logf("bad secret ID: %v", err)
}

func TestVaultStoppedThenBack(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-before"})
	src := newClient(t, s, rootAuth(s)).Source("secret/data/openai", "")
	g := acquire(t, src)

	s.Stop()
	_, err := src.Acquire(t.Context(), reqFor())
	if !retryable(err) {
		t.Fatalf("Acquire with Vault down: want a plain (retryable) error, got %v", err)
	}
	mustErr(t, err, "secret/data/openai")
	_, err = src.Renew(t.Context(), g, time.Minute)
	if !retryable(err) {
		t.Fatalf("Renew with Vault down: want a plain (retryable) error, got %v", err)
	}
	t.Logf("Vault down: %v", err)

	// Callers queued behind a failing first login share its error.
	fresh := newClient(t, s, rootAuth(s))
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() { _, errs[i] = fresh.Source("secret/data/openai", "").Acquire(t.Context(), reqFor()) })
	}
	wg.Wait()
	for _, err := range errs {
		if !retryable(err) {
			t.Fatalf("concurrent Acquire with Vault down: want plain errors, got %v", err)
		}
	}
	if n := fresh.tries.Load(); n != 1 {
		t.Fatalf("5 concurrent first calls with Vault down: want 1 login attempt, got %d", n)
	}

	s.Restart(t) // dev mode: empty again, same root token
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-after"})
	if g := acquire(t, src); g.Value != "sk-test-after" {
		t.Fatalf("Acquire after restart: want sk-test-after, got %q", g.Value)
	}
}

func TestSealedVaultIsRetryable(t *testing.T) {
	t.Parallel()
	s := vaulttest.Start(t)
	s.KVPut(t, "secret", "openai", map[string]any{"api_key": "sk-test-sealed"})
	src := newClient(t, s, rootAuth(s)).Source("secret/data/openai", "")
	acquire(t, src)
	if err := s.Client.Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	_, err := src.Acquire(t.Context(), reqFor())
	if !retryable(err) {
		t.Fatalf("Acquire from a sealed Vault: want a plain (retryable) error, got %v", err)
	}
	mustErr(t, err, "secret/data/openai", "503")
}

func TestWrapErr(t *testing.T) {
	resp := func(code int, msgs ...string) error {
		return &api.ResponseError{HTTPMethod: "PUT", URL: "http://127.0.0.1/v1/sys/leases/renew", StatusCode: code, Errors: msgs}
	}
	raw := func(code int, body string) error {
		return &api.ResponseError{HTTPMethod: "GET", URL: "http://127.0.0.1/v1/x", StatusCode: code, RawError: true, Errors: []string{body}}
	}
	refused := errors.New("dial tcp: connection refused")
	const tok = "hvs.wraperr-test-token"
	for _, tc := range []struct {
		err    error
		kind   error
		status int
		msg    string
	}{
		{resp(403, "permission denied"), lease.ErrDenied, 403, "vault: renew p: permission denied"},
		{resp(400, "lease not found"), lease.ErrPermanent, 400, "vault: renew p: lease not found"},
		{resp(400, "lease is not renewable"), lease.ErrPermanent, 400, "vault: renew p: lease is not renewable"},
		{resp(400, "lease expired"), lease.ErrPermanent, 400, "vault: renew p: lease expired"},
		{resp(400, "invalid lease ID"), lease.ErrPermanent, 400, "vault: renew p: invalid lease ID"},
		{resp(503, "Vault is sealed"), nil, 503, "vault: renew p: Vault is sealed (HTTP 503)"},
		{resp(500), nil, 500, "vault: renew p: Internal Server Error (HTTP 500)"},
		{resp(403, "1 error occurred:\n\t* permission denied\n\n"), lease.ErrDenied, 403, "vault: renew p: permission denied"},
		{resp(400, "2 errors occurred:\n\t* a\n\t* lease not found\n\n"), lease.ErrPermanent, 400, "vault: renew p: a; lease not found"},
		// A JSON message quoting the token is masked; an HTML page is dropped whole.
		{resp(400, "bad header X-Vault-Token: "+tok), nil, 400, "vault: renew p: " + secret.NewScrubber(tok).String("bad header X-Vault-Token: "+tok) + " (HTTP 400)"},
		{raw(502, "<html>X-Vault-Token: "+tok+"</html>"), nil, 502, "vault: renew p: Bad Gateway (HTTP 502)"},
		{raw(403, "<html>denied "+tok+"</html>"), lease.ErrDenied, 403, "vault: renew p: Forbidden"},
		{raw(599, "<html>"+tok+"</html>"), nil, 599, "vault: renew p: error (HTTP 599)"},
		{refused, nil, 0, "vault: renew p: dial tcp: connection refused"},
	} {
		err := wrapErr("renew", "p", tc.err, secret.NewScrubber(tok))
		if err.Error() != tc.msg || strings.Contains(err.Error(), tok) {
			t.Errorf("wrapErr(%v): want message %q, got %q", tc.err, tc.msg, err)
		}
		for _, k := range []error{lease.ErrDenied, lease.ErrPermanent} {
			if errors.Is(err, k) != (k == tc.kind) {
				t.Errorf("wrapErr(%q): errors.Is(%v) = %v, want %v", tc.msg, k, !(k == tc.kind), k == tc.kind)
			}
		}
		var se *lease.SourceError
		if !errors.As(err, &se) || se.Status != tc.status {
			t.Errorf("wrapErr(%q): want a *lease.SourceError with status %d, got %#v", tc.msg, tc.status, err)
		}
		// The client's ResponseError prints the raw body: it must not be
		// reachable through the chain. A transport error is kept.
		var re *api.ResponseError
		if errors.As(err, &re) {
			t.Errorf("wrapErr(%q) keeps the client's *api.ResponseError in its chain", tc.msg)
		}
		if tc.err == refused && !errors.Is(err, refused) {
			t.Errorf("wrapErr(%q) must wrap a transport error", tc.msg)
		}
	}
	if err := wrapErr("renew", "p", fmt.Errorf("ctx: %w", context.DeadlineExceeded), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wrapErr of a timeout must keep context.DeadlineExceeded: %v", err)
	}
}

func TestGrantFromResponses(t *testing.T) {
	// A non-renewable dynamic secret: the manager must re-acquire before expiry.
	g, err := grantFrom("aws/creds/x", "", &api.Secret{LeaseID: "aws/creds/x/1", LeaseDuration: 60, Renewable: false,
		Data: map[string]any{"token": "sk-test-aws"}})
	if err != nil || g.Renewable || g.TTL != time.Minute || g.SourceLeaseID != "aws/creds/x/1" || g.Value != "sk-test-aws" {
		t.Fatalf("non-renewable dynamic secret: got %+v, %v", g, err)
	}
	// A deleted KV v2 version comes back as data: null with metadata.
	_, err = grantFrom("secret/data/x", "", &api.Secret{Data: map[string]any{
		"data": nil, "metadata": map[string]any{"deletion_time": "2026-01-01T00:00:00Z"}}})
	mustErr(t, err, "no secret at path secret/data/x", "deleted")
	// KV v1 has a refresh interval but no lease: the manager is the lessor.
	g, err = grantFrom("kv/x", "", &api.Secret{LeaseDuration: 2764800, Data: map[string]any{"k": true}})
	if err != nil || g.TTL != 0 || g.SourceLeaseID != "" || !g.Renewable || g.Value != "true" {
		t.Fatalf("KV v1: want TTL 0, no lease, renewable, value \"true\"; got %+v, %v", g, err)
	}
	_, err = grantFrom("kv/x", "", nil)
	mustErr(t, err, "no secret at path kv/x")
}
