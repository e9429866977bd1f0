package oauth2_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/oauthtest"
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

// newManager is a manager on a fake clock over src (leasetest.Env).
func newManager(t *testing.T, src lease.Source, p lease.Policy) *leasetest.Env {
	t.Helper()
	return leasetest.NewEnv(t, time.Time{}, "idp", p, func(*leasetest.Clock, *slog.Logger) lease.Source { return src })
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
