package exec_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/exec"
	"github.com/credproxy/credproxy/lease/leasetest"
)

// The helpers these tests run are real /bin/sh scripts, written into the
// test's temporary directory.

// script writes body as an executable /bin/sh script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "helper.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// env is a source under test with its log and fake clock.
type env struct {
	src   *exec.Source
	logs  *testutil.SyncBuffer
	clock *leasetest.Clock
}

var epoch = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// newSource builds a source running cfg.Command (or the script body) with
// a JSON log and a fake clock at epoch.
func newSource(t *testing.T, cfg exec.Config, body string) *env {
	t.Helper()
	e := &env{logs: &testutil.SyncBuffer{}, clock: leasetest.NewClock(epoch)}
	if cfg.Command == nil {
		cfg.Command = []string{script(t, body)}
	}
	if cfg.Name == "" {
		cfg.Name = "helper"
	}
	cfg.Clock = e.clock
	cfg.Logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src, err := exec.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.src = src
	return e
}

func (e *env) acquire(t *testing.T) lease.Grant {
	t.Helper()
	g, err := e.src.Acquire(context.Background(), lease.Request{Credential: "api", TTL: 15 * time.Minute})
	if err != nil {
		t.Fatalf("Acquire: %v\nlogs:\n%s", err, e.logs.String())
	}
	return g
}

// acquireErr runs the helper and wants it to fail with a *lease.SourceError.
func (e *env) acquireErr(t *testing.T) error {
	t.Helper()
	_, err := e.src.Acquire(context.Background(), lease.Request{Credential: "api"})
	var se *lease.SourceError
	if !errors.As(err, &se) {
		t.Fatalf("Acquire: %v; want a *lease.SourceError", err)
	}
	return err
}

// notIn fails if any of secrets appears in any of texts.
func notIn(t *testing.T, secrets []string, texts map[string]string) {
	t.Helper()
	for name, text := range texts {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%s carries a secret %.14s...: %s", name, s, text)
			}
		}
	}
}

// gone reports whether process pid has ended (absent, or a zombie waiting
// for init to reap it).
func gone(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// readPID waits for the helper to have written a pid into path.
func readPID(t *testing.T, path string) string {
	var pid string
	testutil.WaitFor(t, func() bool {
		b, _ := os.ReadFile(path)
		pid = strings.TrimSpace(string(b))
		return pid != ""
	}, "the helper's pid file")
	return pid
}

// newManager is a manager on a fake clock (leasetest.Env) over an exec
// source built from cfg with the env's clock and logger.
func newManager(t *testing.T, cfg exec.Config, p lease.Policy) *leasetest.Env {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "helper"
	}
	return leasetest.NewEnv(t, epoch, cfg.Name, p, func(clock *leasetest.Clock, log *slog.Logger) lease.Source {
		cfg.Clock, cfg.Logger = clock, log
		src, err := exec.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return src
	})
}

// runs counts the lines a helper appended to path: one per run.
func runs(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}
