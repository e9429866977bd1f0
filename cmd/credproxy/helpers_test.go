package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/rules"
)

func mustLoad(t *testing.T, path string) *rules.Config {
	t.Helper()
	cfg, err := rules.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// served is credproxy running in this test process through serve.
type served struct {
	proxy, admin string
	adminToken   string // from the config's admin.tokenFile ("" when none)
	audit        *testutil.SyncBuffer
	stop         context.CancelFunc
	done         chan error
	once         sync.Once
	err          error
}

// startServe runs serve on cfg until the test ends (or shutdown is called).
func startServe(t *testing.T, cfg *rules.Config) *served {
	t.Helper()
	return startServeWith(t, cfg, serveOptions{})
}

// startServeWith is startServe with options (a fake Clock, a Log to
// inspect); it sets AuditOut and Ready itself.
func startServeWith(t *testing.T, cfg *rules.Config, o serveOptions) *served {
	t.Helper()
	tok, err := cfg.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{adminToken: tok, audit: &testutil.SyncBuffer{}, stop: cancel, done: make(chan error, 1)}
	addrs := make(chan [2]string, 1)
	if o.Log == nil {
		o.Log = discardLogger()
	}
	o.AuditOut = s.audit
	o.Ready = func(p, a string) { addrs <- [2]string{p, a} }
	go func() { s.done <- serve(ctx, cfg, o) }()
	select {
	case a := <-addrs:
		s.proxy, s.admin = a[0], a[1]
	case err := <-s.done:
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() { s.shutdown(t) })
	return s
}

// adminRequest calls the admin API at path with the bearer token auth ("" for
// none) and returns the status and body.
func (s *served) adminRequest(t *testing.T, method, path, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// adminToken is the token the test configs' admin.tokenFile holds.
const adminToken = "test-admin-token-0123456789abcdef"

// writeAdminToken puts adminToken into dir/admin-token, which the test
// configs name as admin.tokenFile.
func writeAdminToken(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// shutdown stops credproxy as SIGTERM would (drain, revoke every lease), once,
// and returns what serve returned.
func (s *served) shutdown(t *testing.T) error {
	s.once.Do(func() {
		s.stop()
		select {
		case s.err = <-s.done:
		case <-time.After(30 * time.Second):
			s.err = errors.New("serve did not return within 30s of shutdown")
		}
	})
	return s.err
}
