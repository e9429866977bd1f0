package oauth2_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/oauthtest"
	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
	"github.com/credproxy/credproxy/lease/oauth2"
)

// writeFile writes content to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// ccSource is a client_credentials source for srv, logging into log (nil: discard).
func ccSource(t *testing.T, srv *oauthtest.Server, log *slog.Logger) *oauth2.Source {
	t.Helper()
	dir := t.TempDir()
	src, err := oauth2.New(oauth2.Config{
		Name: "idp", Grant: oauth2.GrantClientCredentials, TokenURL: srv.TokenURL,
		ClientID: oauthtest.ClientID, ClientSecretFile: writeFile(t, dir, "secret", srv.ClientSecret+"\n", 0o600),
		Scopes: []string{"api"}, RevocationURL: srv.RevokeURL, CAFile: srv.CAFile, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// active reports whether srv says token is active, failing on an error.
func active(t *testing.T, srv *oauthtest.Server, token string) bool {
	t.Helper()
	ok, err := srv.Introspect(token)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// managerEnv is a lease.Manager on a fake clock over one credential.
type managerEnv struct {
	m     *lease.Manager
	clock *leasetest.Clock
	audit *testutil.SyncBuffer
	logs  *testutil.SyncBuffer
}

func newManager(t *testing.T, src lease.Source, p lease.Policy) *managerEnv {
	t.Helper()
	e := &managerEnv{clock: leasetest.NewClock(time.Unix(1_700_000_000, 0)), audit: &testutil.SyncBuffer{}, logs: &testutil.SyncBuffer{}}
	e.m = lease.NewManager([]lease.Credential{{Name: "api", SourceName: "idp", Source: src, Policy: p}},
		lease.Options{Clock: e.clock, Audit: lease.NewAuditor(e.audit), Logger: slog.New(slog.NewJSONHandler(e.logs, nil))})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.m.Shutdown(ctx)
	})
	return e
}

func (e *managerEnv) get(t *testing.T) lease.Ticket {
	t.Helper()
	tk, err := e.m.Get(context.Background(), "api", "agent", lease.Use{Rule: "r"})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return tk
}

// notIn fails if any of secrets appears in any of texts.
func notIn(t *testing.T, secrets []string, texts map[string]string) {
	t.Helper()
	for name, text := range texts {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%s carries a secret %.12s...: %s", name, s, text)
			}
		}
	}
}

func errorsIs(err, target error) bool { return err != nil && errors.Is(err, target) }

// current waits for the manager's current lease (not one rotated out) whose
// id is not notID, and returns it. A failed lease operation ends the wait at
// once, and a timeout says what the manager held and audited, so that a
// failure names its cause rather than only the wait.
func (e *managerEnv) current(t *testing.T, notID string) lease.Info {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		infos := e.m.List()
		for _, in := range infos {
			if in.ID != notID && in.State != "retiring" {
				return in
			}
		}
		if strings.Contains(e.audit.String(), "lease.failed") {
			t.Fatalf("waiting for a lease other than %s, a lease operation failed:\naudit:\n%s\nlogs:\n%s", notID, e.audit.String(), e.logs.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for a current lease other than %s; held %+v\naudit:\n%s\nlogs:\n%s", notID, infos, e.audit.String(), e.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
