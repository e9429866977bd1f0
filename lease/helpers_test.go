package lease_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/internal/testutil"
	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// policy is the default test policy: 10m leases renewed 2m ahead, revoked
// after 5m idle, never older than 1h.
var policy = lease.Policy{
	TTL: 10 * time.Minute, MaxTTL: time.Hour, RenewBeforeExpiry: 2 * time.Minute,
	IdleTimeout: 5 * time.Minute, AutoRenew: true,
}

type harness struct {
	t     *testing.T
	m     *lease.Manager
	clock *leasetest.Clock
	src   *leasetest.Source
	audit *testutil.SyncBuffer
	logs  *testutil.SyncBuffer
}

// newHarness runs a manager with one credential "openai" on a test source
// and a fake clock. Jitter is off (Rand returns 0.5).
func newHarness(t *testing.T, p lease.Policy) *harness {
	t.Helper()
	h := &harness{t: t, clock: leasetest.NewClock(t0), src: leasetest.NewSource(),
		audit: &testutil.SyncBuffer{}, logs: &testutil.SyncBuffer{}}
	h.m = lease.NewManager([]lease.Credential{
		{Name: "openai", SourceName: "test", Source: h.src, Policy: p},
	}, h.options())
	t.Cleanup(func() { _ = h.m.Shutdown(context.Background()) })
	return h
}

func (h *harness) options() lease.Options {
	return lease.Options{
		Clock:  h.clock,
		Audit:  lease.NewAuditor(h.audit),
		Logger: slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Rand:   func() float64 { return 0.5 },
	}
}

// advance moves the fake clock and waits for the manager to catch up.
func (h *harness) advance(d time.Duration) {
	h.clock.Advance(d)
	lease.Settle(h.m)
}

var use = lease.Use{Rule: "openai-chat", Purpose: "chat completion"}

func (h *harness) get(identity string) lease.Ticket {
	h.t.Helper()
	tk, err := h.m.Get(context.Background(), "openai", identity, use)
	if err != nil {
		h.t.Fatalf("Get(openai, %q): unexpected error: %v", identity, err)
	}
	return tk
}

func (h *harness) wantValue(identity, want string) lease.Ticket {
	h.t.Helper()
	tk := h.get(identity)
	if tk.Value != want {
		h.t.Fatalf("Get(openai, %q).Value = %q, want %q", identity, tk.Value, want)
	}
	return tk
}

func (h *harness) wantCounts(acquires, renews, revokes int) {
	h.t.Helper()
	a, r, v := h.src.Acquires(), h.src.Renews(), h.src.Revokes()
	if a != acquires || r != renews || v != revokes {
		h.t.Fatalf("source calls: %d acquire, %d renew, %d revoke; want %d, %d, %d\ncalls: %q",
			a, r, v, acquires, renews, revokes, h.src.Calls())
	}
}

// events decodes the audit trail.
func (h *harness) events() []map[string]any {
	h.t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(strings.NewReader(h.audit.String()))
	for {
		var e map[string]any
		if err := dec.Decode(&e); err == io.EOF {
			return out
		} else if err != nil {
			h.t.Fatalf("audit trail is not JSON lines: %v\n%s", err, h.audit.String())
		}
		out = append(out, e)
	}
}

// eventNames lists "event" or "event:reason" for each audit line.
func (h *harness) eventNames() []string {
	var out []string
	for _, e := range h.events() {
		name := e["event"].(string)
		if r, ok := e["reason"].(string); ok {
			name += ":" + r
		}
		out = append(out, name)
	}
	return out
}

func (h *harness) wantEvents(want ...string) {
	h.t.Helper()
	got := h.eventNames()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		h.t.Fatalf("audit events = %q, want %q", got, want)
	}
}

func (h *harness) wantCalls(want ...string) {
	h.t.Helper()
	got := h.src.Calls()
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		h.t.Fatalf("source calls = %q, want %q", got, want)
	}
}
