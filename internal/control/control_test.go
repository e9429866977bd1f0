package control_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
	"github.com/credproxy/credproxy/rules"
)

// The Go API's errors carry the sentinels an HTTP or MCP front end maps to
// its answers.
func TestControlErrors(t *testing.T) {
	cfg, err := rules.Parse("rules.yaml", []byte(`
identity: agent-a
credentials:
  db: {source: env, env: CREDPROXY_TEST_DB, scope: task}
  openai: {source: env, env: CREDPROXY_TEST_OPENAI}
rules:
  - {name: db, hosts: [db.example.test], credential: db, inject: {header: Authorization, value: "Bearer {{ .Value }}"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	m := lease.NewManager([]lease.Credential{
		{Name: "db", SourceName: "test", Source: leasetest.NewSource(), Policy: lease.Policy{PerTask: true}},
		{Name: "openai", SourceName: "test", Source: leasetest.NewSource()},
	}, lease.Options{Clock: leasetest.NewClock(time.Now())})
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	c := control.New(control.Options{Leases: m, Config: func() *rules.Config { return cfg }})
	ctx := context.Background()

	for name, r := range map[string]control.TaskRequest{
		"negative ttl":       {TTL: -time.Second},
		"shared credential":  {Credentials: []string{"openai"}},
		"unknown credential": {Credentials: []string{"nope"}},
		"control character":  {Purpose: "a\x1b[2Jb"},
		"unknown identity":   {Identity: "agent-b"},
	} {
		if _, err := c.BeginTask(ctx, r); !errors.Is(err, control.ErrInvalid) {
			t.Errorf("BeginTask with %s: %v, want ErrInvalid", name, err)
		}
	}
	in, err := c.BeginTask(ctx, control.TaskRequest{Purpose: "p", Credentials: []string{"db"}})
	if err != nil || len(in.Leases) != 1 {
		t.Fatalf("BeginTask: %+v, %v", in, err)
	}
	if _, err := c.EndTask(ctx, "tsk_nope"); !errors.Is(err, lease.ErrUnknownTask) {
		t.Errorf("EndTask of an unknown task: %v, want ErrUnknownTask", err)
	}
	if err := c.RevokeLease(ctx, "cpl_nope"); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("RevokeLease of an unknown lease: %v, want ErrNotFound", err)
	}
	if err := c.Reload(); !errors.Is(err, control.ErrNoReload) {
		t.Errorf("Reload with no hook: %v, want ErrNoReload", err)
	}
	if _, err := c.Explain("GET", "gopher://x", ""); !errors.Is(err, control.ErrInvalid) {
		t.Errorf("Explain of a gopher URL: %v, want ErrInvalid", err)
	}
	x, err := c.Explain("", "https://db.example.test/q", "ignored-without-clients")
	if err != nil || x.Action != "inject" || x.Credential != "db" || x.Scope != "task" {
		t.Errorf("Explain GET https://db.example.test/q = %+v, %v; want inject db (task)", x, err)
	}
	if out, err := c.EndTask(ctx, in.ID); err != nil || out.State != lease.TaskEnded || len(c.ListLeases()) != 0 {
		t.Errorf("EndTask = %+v, %v; %d leases left", out, err, len(c.ListLeases()))
	}
}
