package static_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/static"
)

func TestEnv(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_KEY", "sk-test-env-1")
	src := static.Env{Var: "CREDPROXY_TEST_KEY"}
	g, err := src.Acquire(context.Background(), lease.Request{Credential: "openai", TTL: time.Minute})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if g.Value != "sk-test-env-1" || g.Data["value"] != "sk-test-env-1" || g.TTL != 0 || !g.Renewable {
		t.Fatalf("grant = %+v, want value sk-test-env-1 in Value and Data, TTL 0, renewable", g)
	}
	t.Setenv("CREDPROXY_TEST_KEY", "sk-test-env-2")
	g, err = src.Renew(context.Background(), g, time.Minute)
	if err != nil || g.Value != "sk-test-env-2" {
		t.Fatalf("Renew = %q, %v; want the re-read value sk-test-env-2", g.Value, err)
	}
	if err := src.Revoke(context.Background(), g); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
}

func TestEnvMissing(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_EMPTY", "")
	for _, name := range []string{"CREDPROXY_TEST_EMPTY", "CREDPROXY_TEST_NEVER_SET"} {
		_, err := static.Env{Var: name}.Acquire(context.Background(), lease.Request{})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Acquire with %s unset: err = %v, want an error naming the variable", name, err)
		}
	}
}

func TestFileRotatedOnRenew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	write(t, path, "sk-test-file-1\n")
	src := static.File{Path: path}
	g, err := src.Acquire(context.Background(), lease.Request{})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if g.Value != "sk-test-file-1" || g.Data["value"] != "sk-test-file-1" || g.TTL != 0 || !g.Renewable {
		t.Fatalf("grant = %+v, want sk-test-file-1 without its newline, TTL 0, renewable", g)
	}
	write(t, path, "sk-test-file-2\r\n")
	g, err = src.Renew(context.Background(), g, time.Minute)
	if err != nil || g.Value != "sk-test-file-2" {
		t.Fatalf("Renew after rotation = %q, %v; want sk-test-file-2", g.Value, err)
	}
	if err := src.Revoke(context.Background(), g); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	empty := filepath.Join(dir, "empty")
	write(t, empty, "\n")
	for _, path := range []string{missing, empty} {
		_, err := static.File{Path: path}.Acquire(context.Background(), lease.Request{})
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("Acquire(%s): err = %v, want an error naming the path", path, err)
		}
		if err != nil && strings.Count(err.Error(), path) != 1 {
			t.Errorf("Acquire(%s): err = %q names the path more than once", path, err)
		}
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
