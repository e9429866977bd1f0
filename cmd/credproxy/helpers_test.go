package main

import (
	"context"
	"errors"
	"log/slog"
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
	audit        *testutil.SyncBuffer
	stop         context.CancelFunc
	done         chan error
	once         sync.Once
	err          error
}

// startServe runs serve on cfg until the test ends (or shutdown is called).
func startServe(t *testing.T, cfg *rules.Config) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{audit: &testutil.SyncBuffer{}, stop: cancel, done: make(chan error, 1)}
	addrs := make(chan [2]string, 1)
	go func() {
		s.done <- serve(ctx, cfg, serveOptions{Log: discardLogger(), AuditOut: s.audit,
			Ready: func(p, a string) { addrs <- [2]string{p, a} }})
	}()
	select {
	case a := <-addrs:
		s.proxy, s.admin = a[0], a[1]
	case err := <-s.done:
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() { s.shutdown(t) })
	return s
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
