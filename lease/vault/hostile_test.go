package vault

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/internal/vaulttest"
	"github.com/credproxy/credproxy/lease"
)

// leakCheck runs one acquisition through a lease.Manager against src and
// fails if any secret shows up in the error from Get, its PublicMessage, the
// log (the Vault client's and the manager's) or the audit trail.
func leakCheck(t *testing.T, auth Auth, addr, wantPublic string, secrets ...string) {
	t.Helper()
	logs, audit := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := NewClient(Config{Address: addr, Auth: auth, Logger: log})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.Close)
	m := lease.NewManager([]lease.Credential{{Name: "reports", SourceName: "vault",
		Source: c.Source("database/creds/ro", "password"), Policy: lease.Policy{TTL: 15 * time.Minute}}},
		lease.Options{Audit: lease.NewAuditor(audit), Logger: log})
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })

	_, err = m.Get(context.Background(), "reports", "agent-a", lease.Use{Rule: "reports"})
	if err == nil {
		t.Fatal("Get through a hostile Vault: want an error, got a ticket")
	}
	public := lease.PublicMessage(err)
	if public != wantPublic {
		t.Errorf("PublicMessage = %q, want %q", public, wantPublic)
	}
	for name, text := range map[string]string{"Get error": err.Error(), "PublicMessage": public,
		"log": logs.String(), "audit": audit.String()} {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s leaks %q:\n%s", name, s, text)
			}
		}
	}
	if !strings.Contains(audit.String(), `"event":"lease.failed"`) {
		t.Errorf("audit trail lacks the failed acquisition:\n%s", audit.String())
	}
	t.Logf("Get error: %v", err)
}

// A reverse proxy in front of Vault answers 502 with an HTML page quoting the
// request headers: the token must not travel from that page anywhere.
func TestHostileVaultHTMLPageLeaksNoToken(t *testing.T) {
	t.Parallel()
	const tok = "hvs.fake-echo-vault-token-0123456789"
	fake := vaulttest.StartFakeEchoVault(t, http.StatusBadGateway, false)
	leakCheck(t, Auth{Token: tok}, fake.Addr, `credential "reports": store vault unavailable (HTTP 5xx)`, tok)
	if fake.Requests.Load() == 0 {
		t.Fatal("the fake Vault saw no request")
	}
}

// Vault's JSON error shape quoting the token (or a login's secret ID) is
// kept as Vault's message, with the secret masked.
func TestHostileVaultJSONEchoIsMasked(t *testing.T) {
	t.Parallel()
	const tok = "hvs.fake-echo-vault-json-token-0123"
	fake := vaulttest.StartFakeEchoVault(t, http.StatusForbidden, true)
	leakCheck(t, Auth{Token: tok}, fake.Addr, `credential "reports": access denied by store vault (HTTP 4xx)`, tok)

	const secretID = "fake-echo-secret-id-0123456789"
	leakCheck(t, Auth{Method: MethodAppRole, RoleID: "role-id-1",
		SecretIDFile: vaulttest.WriteFile(t, "secret-id", secretID+"\n")},
		fake.Addr, `credential "reports": access denied by store vault (HTTP 4xx)`, secretID)

	const jwt = "eyJhbGciOiJSUzI1NiJ9.fake-echo-jwt.sig0123"
	leakCheck(t, Auth{Method: MethodKubernetes, Role: "agent", JWTFile: vaulttest.WriteFile(t, "jwt", jwt)},
		fake.Addr, `credential "reports": access denied by store vault (HTTP 4xx)`, jwt)
}
