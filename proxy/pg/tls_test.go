package pg_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credproxy/credproxy/proxy"
	"github.com/credproxy/credproxy/proxy/pg"
	"github.com/credproxy/credproxy/rules"
)

// The upstream TLS follows sslmode: verify-full checks the chain and the
// name and never falls back to plain TCP; require does the same against
// caFile alone, and pg.New refuses it without one.
func TestUpstreamTLS(t *testing.T) {
	h := newHarness(t, policy)
	a := admin(t)
	var certFile string
	if err := a.QueryRow(t.Context(), "SHOW ssl_cert_file").Scan(&certFile); err != nil {
		t.Fatal(err)
	}
	var sslOn string
	if err := a.QueryRow(t.Context(), "SHOW ssl").Scan(&sslOn); err != nil || sslOn != "on" {
		t.Fatalf("the test PostgreSQL must have ssl on (scripts/services.sh): %q %v", sslOn, err)
	}
	if !filepath.IsAbs(certFile) {
		var dir string
		_ = a.QueryRow(t.Context(), "SHOW data_directory").Scan(&dir)
		certFile = filepath.Join(dir, certFile)
	}
	if _, err := os.ReadFile(certFile); err != nil {
		t.Fatalf("the server's certificate must be readable as the upstream caFile: %v", err)
	}
	// Another CA, minted by credproxy's own CA code.
	dir := t.TempDir()
	if _, _, err := proxy.LoadOrCreateCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(dir, "ca.pem")

	tests := []struct {
		name, host, mode, ca string
		ok                   bool
	}{
		{"verify-full", "localhost", rules.SSLVerifyFull, certFile, true},
		{"verify-full-wrong-name", "127.0.0.1", rules.SSLVerifyFull, certFile, false},
		{"require-ca", "localhost", rules.SSLRequire, certFile, true},
		{"require-wrong-name", "127.0.0.1", rules.SSLRequire, certFile, false},
		{"require-wrong-ca", "localhost", rules.SSLRequire, otherCA, false},
	}
	noCA := database(t, "require-no-ca", "reports-db")
	noCA.Upstream.SSLMode = rules.SSLRequire
	if _, err := pg.New(pg.Options{Database: noCA, Credentials: h.mgr}); err == nil || !strings.Contains(err.Error(), "caFile") {
		t.Errorf("pg.New with sslmode require and no caFile: %v; want refused (upstream TLS is always verified)", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := database(t, tt.name, "reports-db")
			db.Upstream.Host, db.Upstream.SSLMode, db.Upstream.CAFile = tt.host, tt.mode, tt.ca
			addr, _ := h.serve(db, func(*pg.Options) {})
			if !tt.ok {
				pe := connectErr(t, addr)
				if pe.Code != "08001" || !strings.Contains(pe.Message, `credential "reports-db"`) {
					t.Fatalf("%s: agent got %s %q, want 08001", tt.name, pe.Code, pe.Message)
				}
				return
			}
			c := connect(t, addr)
			var ssl bool
			if err := c.QueryRow(t.Context(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
				t.Fatalf("%s: upstream session ssl = %v, %v; want TLS", tt.name, ssl, err)
			}
		})
	}
}

// With clients configured, an agent logs in with its client name and
// token; the database's identities restrict who may use it.
func TestClientLogin(t *testing.T) {
	h := newHarness(t, policy)
	auth := func(user, pass string) (string, bool) {
		if (user == "agent-a" || user == "agent-b") && pass == "sk-test-client-token-"+user {
			return user, true
		}
		return "", false
	}
	db := database(t, "reports", "reports-db")
	db.Identities = []string{"agent-a"}
	addr, _ := h.serve(db, func(o *pg.Options) { o.Authenticate = auth })

	cfg := agentConfig(t, addr, "agent-a")
	cfg.Password = "sk-test-client-token-agent-a"
	c := connectConfig(t, cfg)
	if u := currentUser(t, c); !strings.HasPrefix(u, h.prefix) {
		t.Fatalf("agent-a: user %q", u)
	}
	if !strings.Contains(h.audit.String(), `"identity":"agent-a"`) {
		t.Fatalf("audit trail does not name agent-a:\n%s", h.audit.String())
	}
	pe := connectErr(t, addr) // user "agent", no password
	if pe.Code != "28P01" {
		t.Fatalf("no token: %s %q, want 28P01", pe.Code, pe.Message)
	}
	cfg = agentConfig(t, addr, "agent-b")
	cfg.Password = "sk-test-client-token-agent-b"
	if pe := connectConfigErr(t, cfg); pe.Code != "28000" || !strings.Contains(pe.Message, `identity "agent-b" may not use database "reports"`) {
		t.Fatalf("agent-b: %s %q, want 28000", pe.Code, pe.Message)
	}
}
