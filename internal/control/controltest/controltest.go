// Package controltest is the control API over a real lease manager for
// tests of what serves it (the admin server's routes, the MCP tools): one
// shared credential and two task-scoped ones, each on its own counting test
// source (values sk-test-N), on a fake clock. Nothing here is for
// production use.
package controltest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/control"
	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
	"github.com/credproxy/credproxy/rules"
)

// Config is the rules the control API describes: openai (shared, purpose
// chat), db (scope task, maxTTL 1h, injected as a query parameter on GET
// /v1/ of reports.example.test and its subdomains) and api (scope task).
// The CREDPROXY_TEST_* variables are only named: the manager's sources are
// test sources.
const Config = `
identity: agent-a
leases: {maxTTL: 2h}
credentials:
  openai: {source: env, env: CREDPROXY_TEST_OPENAI}
  db: {source: env, env: CREDPROXY_TEST_DB, scope: task, maxTTL: 1h}
  api: {source: env, env: CREDPROXY_TEST_API, scope: task}
rules:
  - name: openai
    hosts: [api.openai.com]
    credential: openai
    purpose: chat
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: reports
    hosts: [reports.example.test, "*.reports.example.test"]
    paths: [/v1/]
    methods: [GET]
    credential: db
    inject: {query: key, value: "{{ .Value }}"}
  - name: api
    hosts: [api.example.test]
    credential: api
    inject: {header: X-Api-Key, value: "{{ .Value }}"}
`

// Env is the control API over a lease manager for Config.
type Env struct {
	Cfg   *rules.Config
	Ctl   *control.Control
	M     *lease.Manager
	Srcs  map[string]*leasetest.Source // by credential
	Clock *leasetest.Clock
	Audit *testutil.SyncBuffer
}

// New builds an Env whose Reload is reload (nil: none wired); the manager
// is shut down when the test ends.
func New(t testing.TB, reload func() error) *Env {
	t.Helper()
	cfg, err := rules.Parse("rules.yaml", []byte(Config))
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Cfg: cfg, Srcs: map[string]*leasetest.Source{}, Audit: &testutil.SyncBuffer{},
		Clock: leasetest.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}
	var creds []lease.Credential
	for name, c := range cfg.Credentials {
		e.Srcs[name] = leasetest.NewSource()
		creds = append(creds, lease.Credential{Name: name, SourceName: "test", Source: e.Srcs[name], Policy: lease.Policy{
			TTL: c.Policy.DefaultTTL, MaxTTL: c.Policy.MaxTTL, AutoRenew: c.Policy.AutoRenew,
			RenewBeforeExpiry: c.Policy.RenewBeforeExpiry, PerTask: c.Scope == rules.ScopeTask}})
	}
	e.M = lease.NewManager(creds, lease.Options{Clock: e.Clock, Audit: lease.NewAuditor(e.Audit),
		Logger: slog.New(slog.DiscardHandler), MaxTaskTTL: cfg.Leases.MaxTTL})
	t.Cleanup(func() { _ = e.M.Shutdown(context.Background()) })
	e.Ctl = control.New(control.Options{Leases: e.M, Config: func() *rules.Config { return cfg }, Reload: reload})
	return e
}
