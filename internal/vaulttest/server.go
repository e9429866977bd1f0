// Package vaulttest runs a real Vault dev server (and drives the real
// PostgreSQL that scripts/services.sh starts) for tests. It never skips: a
// missing binary or database is a failed test with a message saying how to
// get them. It knows nothing about credproxy's lease or proxy packages.
package vaulttest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/credproxy/credproxy/internal/testutil"
)

// EnvBin names the Vault binary built by scripts/services.sh.
const EnvBin = "CREDPROXY_VAULT_BIN"

const howTo = "run ./scripts/test.sh, which builds Vault and starts PostgreSQL (or `source scripts/services.sh`)"

// Server is one Vault dev server on 127.0.0.1. Dev mode keeps everything in
// memory and starts unsealed with KV v2 mounted at secret/.
type Server struct {
	Addr      string      // http://127.0.0.1:<port>
	RootToken string      // "root"
	Client    *api.Client // logged in with RootToken

	bin  string
	port int
	dir  string // HOME and log directory

	proc testutil.Daemon
	mu   sync.Mutex
	tag  string // random per start; see PGUserPrefix
}

// Start runs a dev server on a free port and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv(EnvBin)
	if bin == "" {
		t.Fatalf("vaulttest: $%s is not set: %s", EnvBin, howTo)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("vaulttest: $%s: %v: %s", EnvBin, err, howTo)
	}
	s := &Server{RootToken: "root", bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	// A free port can be taken before Vault binds it: try another.
	testutil.Retry(t, "vaulttest: start vault", 3, 0, func() error {
		s.port = freePort(t)
		s.Addr = "http://127.0.0.1:" + strconv.Itoa(s.port)
		return s.start()
	})
	return s
}

// Restart stops the server and starts a new one on the same port with the
// same root token. Dev mode is in-memory: every mount, policy, secret, token
// and lease is gone, so tests seed again what they need (database roles that
// the old server created are left in PostgreSQL until the test ends).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	// The port may linger for a moment after the kill.
	testutil.Retry(t, "vaulttest: restart vault on "+s.Addr, 50, 100*time.Millisecond, s.start)
}

// Stop kills the server (like a crash: nothing is revoked) and waits for it
// to exit. Calling it again, or on a stopped server, does nothing.
func (s *Server) Stop() { s.proc.Stop() }

// Output returns what the running server has logged so far.
func (s *Server) Output() string { return s.proc.Output() }

func (s *Server) start() error {
	cmd := exec.Command(s.bin, "server", "-dev",
		"-dev-root-token-id="+s.RootToken,
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(s.port),
		"-dev-no-store-token")
	cmd.Env = append(cleanEnv(), "HOME="+s.dir, "VAULT_LOG_LEVEL=warn")
	cmd.Dir = s.dir
	conf := api.DefaultConfig()
	conf.Address = s.Addr
	conf.MaxRetries = 0
	c, err := api.NewClient(conf)
	if err != nil {
		return err
	}
	c.SetToken(s.RootToken)
	if err := s.proc.Start(cmd, func(exited <-chan struct{}) error { return waitHealthy(c, exited) }); err != nil {
		return err
	}
	s.mu.Lock()
	s.Client = c
	s.tag = randomTag()
	s.mu.Unlock()
	return nil
}

func waitHealthy(c *api.Client, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("vault exited during startup")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err := c.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && h.Initialized && !h.Sealed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault not healthy after 60s (last error: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a port p such that p and p+1 (dev mode's cluster
// listener) are free on 127.0.0.1.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("vaulttest: free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatalf("vaulttest: no two adjacent free ports on 127.0.0.1")
	return 0
}

// cleanEnv drops VAULT_* so the caller's Vault settings cannot leak into the
// dev server.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

// WriteFile writes content to a new file under the test's temp dir (a token
// or secret ID file, say) and returns its path.
func WriteFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatalf("vaulttest: write %s: %v", p, err)
	}
	return p
}
