package lease_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
	"github.com/credproxy/credproxy/lease/leasetest"
)

// taskPolicy: task-scoped 10m leases renewed 2m ahead, never idle, never
// older than 1h.
var taskPolicy = lease.Policy{TTL: 10 * time.Minute, MaxTTL: time.Hour, RenewBeforeExpiry: 2 * time.Minute,
	AutoRenew: true, PerTask: true}

// newTaskHarness runs a manager with task-scoped credentials "db" (on h.src)
// and "api" (on the returned second source), and a shared "openai".
func newTaskHarness(t *testing.T, opts ...func(*lease.Options)) (*harness, *leasetest.Source) {
	t.Helper()
	h := &harness{t: t}
	base := newHarness(t, policy) // for its clock, buffers and options
	h.clock, h.src, h.audit, h.logs = base.clock, leasetest.NewSource(), base.audit, base.logs
	api := leasetest.NewSource()
	o := h.options()
	for _, f := range opts {
		f(&o)
	}
	h.m = lease.NewManager([]lease.Credential{
		{Name: "db", SourceName: "test", Source: h.src, Policy: taskPolicy},
		{Name: "api", SourceName: "test", Source: api, Policy: taskPolicy},
		{Name: "openai", SourceName: "test", Source: leasetest.NewSource(), Policy: policy},
	}, o)
	t.Cleanup(func() { _ = h.m.Shutdown(context.Background()) })
	return h, api
}

func (h *harness) begin(spec lease.TaskSpec) lease.TaskInfo {
	h.t.Helper()
	in, err := h.m.BeginTask(context.Background(), spec)
	if err != nil {
		h.t.Fatalf("BeginTask(%+v): %v", spec, err)
	}
	return in
}

func (h *harness) getTask(cred, identity, task string) (lease.Ticket, error) {
	return h.m.Get(context.Background(), cred, identity, lease.Use{Rule: cred + "-rule", Purpose: "rule purpose", Task: task})
}

// wantTaskEvents checks every audit event names the task and its purpose.
func (h *harness) wantTaskEvents(id, purpose string) {
	h.t.Helper()
	for _, e := range h.events() {
		if e["task"] != id || e["purpose"] != purpose {
			h.t.Errorf("audit event %v: want task %q and purpose %q", e, id, purpose)
		}
	}
}

func TestTaskLeasesAreRevokedTogetherAtEnd(t *testing.T) {
	h, _ := newTaskHarness(t)
	in := h.begin(lease.TaskSpec{Purpose: "migrate orders", TTL: 30 * time.Minute})
	if in.State != lease.TaskOpen || !strings.HasPrefix(in.ID, "tsk_") || in.TTL != "30m0s" || len(in.Leases) != 0 {
		t.Fatalf("BeginTask = %+v, want an open tsk_ task of 30m holding nothing", in)
	}
	var first lease.Ticket
	for i, named := range []string{in.ID, in.ID, ""} { // "": the caller's one open task
		tk, err := h.getTask("db", "agent-a", named)
		if err != nil {
			t.Fatalf("request %d in the task: %v", i, err)
		}
		if i == 0 {
			first = tk
		} else if tk.LeaseID != first.LeaseID {
			t.Fatalf("request %d got lease %s, want the task's one lease %s", i, tk.LeaseID, first.LeaseID)
		}
	}
	if ls := h.m.List(); len(ls) != 1 || ls[0].Task != in.ID {
		t.Fatalf("List = %+v, want one lease of task %s", ls, in.ID)
	}
	ended, err := h.m.EndTask(context.Background(), in.ID)
	if err != nil || ended.State != lease.TaskEnded {
		t.Fatalf("EndTask = %+v, %v; want ended", ended, err)
	}
	// EndTask returns once the store has revoked: no settling needed.
	h.wantCounts(1, 0, 1)
	h.wantEvents("lease.created", "lease.revoked:task_end")
	h.wantTaskEvents(in.ID, "migrate orders")
	if n := len(h.m.List()); n != 0 {
		t.Fatalf("%d leases held after EndTask, want 0", n)
	}
	// Ending again changes nothing.
	if again, err := h.m.EndTask(context.Background(), in.ID); err != nil || again.State != lease.TaskEnded {
		t.Fatalf("second EndTask = %+v, %v; want the ended task, no error", again, err)
	}
	h.wantCounts(1, 0, 1)

	for _, tc := range []struct {
		task  string
		want  error
		words string
	}{
		{in.ID, lease.ErrTaskEnded, "has ended"},
		{"", lease.ErrNoTask, "has none open"},
		{"tsk_0000000000000000", lease.ErrUnknownTask, "is not open"},
	} {
		_, err := h.getTask("db", "agent-a", tc.task)
		if !errors.Is(err, tc.want) || !strings.Contains(lease.PublicMessage(err), tc.words) || !strings.Contains(lease.PublicMessage(err), `credential "db"`) {
			t.Errorf("Get(db) naming task %q: %v (public %q), want %v saying %q", tc.task, err, lease.PublicMessage(err), tc.want, tc.words)
		}
	}
	h.wantCounts(1, 0, 1) // refused requests never reach the store
	// A shared credential needs no task.
	if _, err := h.getTask("openai", "agent-a", ""); err != nil {
		t.Fatalf("Get(openai) with no task: %v", err)
	}
}

func TestTaskExpiresAtItsTTL(t *testing.T) {
	h, _ := newTaskHarness(t)
	in := h.begin(lease.TaskSpec{Purpose: "nightly batch", TTL: 30 * time.Minute})
	if _, err := h.getTask("db", "", in.ID); err != nil {
		t.Fatal(err)
	}
	for range 29 {
		h.advance(time.Minute) // renewed at 8m, 16m, 24m
	}
	if n := len(h.m.List()); n != 1 {
		t.Fatalf("%d leases held at 29m of a 30m task, want 1", n)
	}
	h.advance(time.Minute)
	h.wantEvents("lease.created", "lease.renewed", "lease.renewed", "lease.renewed", "lease.revoked:task_expired")
	h.wantTaskEvents(in.ID, "nightly batch")
	h.wantCounts(1, 3, 1)
	if ts := h.m.Tasks(); len(ts) != 1 || ts[0].State != lease.TaskExpired || len(ts[0].Leases) != 0 {
		t.Fatalf("Tasks = %+v, want the one task expired holding nothing", ts)
	}
	if _, err := h.getTask("db", "", in.ID); !errors.Is(err, lease.ErrTaskEnded) {
		t.Fatalf("Get in an expired task: %v, want ErrTaskEnded", err)
	}
	h.advance(time.Hour) // an ended task is forgotten after an hour
	if ts := h.m.Tasks(); len(ts) != 0 {
		t.Fatalf("Tasks an hour after expiry = %+v, want none", ts)
	}
}

// A late scheduler does not stretch a task: a request after its TTL is
// refused and ends it there and then.
func TestTaskPastItsTTLIsEndedByTheNextRequest(t *testing.T) {
	h, _ := newTaskHarness(t)
	in := h.begin(lease.TaskSpec{TTL: 5 * time.Minute})
	if _, err := h.getTask("db", "", in.ID); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(5 * time.Minute) // no Settle: the scheduler may not have run
	if _, err := h.getTask("db", "", in.ID); !errors.Is(err, lease.ErrTaskEnded) {
		t.Fatalf("Get at the task's TTL: %v, want ErrTaskEnded", err)
	}
	lease.Settle(h.m)
	h.wantEvents("lease.created", "lease.revoked:task_expired")
}

func TestTaskTTLIsCapped(t *testing.T) {
	h, _ := newTaskHarness(t, func(o *lease.Options) { o.MaxTaskTTL = 2 * time.Hour })
	if in := h.begin(lease.TaskSpec{TTL: 100 * time.Hour}); in.TTL != "2h0m0s" {
		t.Errorf("TTL 100h under MaxTaskTTL 2h = %s, want 2h", in.TTL)
	}
	if in := h.begin(lease.TaskSpec{TTL: 100 * time.Hour, Credentials: []string{"db"}}); in.TTL != "1h0m0s" {
		t.Errorf("TTL 100h naming db (maxTTL 1h) = %s, want 1h", in.TTL)
	}
	if in := h.begin(lease.TaskSpec{}); in.TTL != "15m0s" {
		t.Errorf("no TTL = %s, want the default 15m", in.TTL)
	}
}

func TestTaskTwoCredentialsAcquiredAtBeginAndRevokedTogether(t *testing.T) {
	h, api := newTaskHarness(t)
	in := h.begin(lease.TaskSpec{Purpose: "sync", TTL: 30 * time.Minute, Credentials: []string{"db", "api"}})
	if len(in.Leases) != 2 || h.src.Acquires() != 1 || api.Acquires() != 1 {
		t.Fatalf("BeginTask naming db and api = %+v (%d, %d acquires), want both acquired at begin", in, h.src.Acquires(), api.Acquires())
	}
	for _, c := range []string{"db", "api"} {
		if _, err := h.getTask(c, "anyone", ""); err != nil {
			t.Fatal(err)
		}
	}
	if h.src.Acquires() != 1 || api.Acquires() != 1 {
		t.Fatalf("requests after begin acquired again (%d, %d acquires), want the begin's leases", h.src.Acquires(), api.Acquires())
	}
	if _, err := h.m.EndTask(context.Background(), in.ID); err != nil {
		t.Fatal(err)
	}
	if h.src.Revokes() != 1 || api.Revokes() != 1 || len(h.m.List()) != 0 {
		t.Fatalf("after EndTask: %d, %d revokes, %d held; want both revoked", h.src.Revokes(), api.Revokes(), len(h.m.List()))
	}
	h.wantEvents("lease.created", "lease.created", "lease.revoked:task_end", "lease.revoked:task_end")
	h.wantTaskEvents(in.ID, "sync")
}

func TestTaskBeginFailureHoldsNothing(t *testing.T) {
	h, api := newTaskHarness(t)
	api.FailAcquire(errTest("vault: permission denied"))
	_, err := h.m.BeginTask(context.Background(), lease.TaskSpec{Purpose: "sync", TTL: time.Minute, Credentials: []string{"db", "api"}})
	if err == nil || !strings.Contains(err.Error(), `"api"`) {
		t.Fatalf("BeginTask with api failing: %v, want an error naming api", err)
	}
	if n, ts := len(h.m.List()), h.m.Tasks(); n != 0 || len(ts) != 0 || h.src.Revokes() != 1 {
		t.Fatalf("after a failed begin: %d leases, tasks %+v, %d db revokes; want nothing held, db revoked", n, ts, h.src.Revokes())
	}
	h.wantEvents("lease.created", "lease.failed", "lease.revoked:task_aborted")
	for _, e := range h.events() {
		if !strings.HasPrefix(e["task"].(string), "tsk_") || e["purpose"] != "sync" {
			t.Errorf("audit event %v: want the task's id and purpose", e)
		}
	}

	for _, bad := range [][]string{{"openai"}, {"nope"}} {
		_, err := h.m.BeginTask(context.Background(), lease.TaskSpec{Credentials: bad})
		if !errors.Is(err, lease.ErrNotTaskScoped) && !errors.Is(err, lease.ErrUnknownCredential) {
			t.Errorf("BeginTask naming %v: %v, want ErrNotTaskScoped or ErrUnknownCredential", bad, err)
		}
	}
	if ts := h.m.Tasks(); len(ts) != 0 {
		t.Fatalf("tasks after refused begins: %+v", ts)
	}
}

func TestTasksAreSeparateAndBoundToTheirIdentity(t *testing.T) {
	h, _ := newTaskHarness(t)
	a := h.begin(lease.TaskSpec{Identity: "agent-a", TTL: time.Hour})
	b := h.begin(lease.TaskSpec{Identity: "agent-b", TTL: time.Hour})
	ta, err := h.getTask("db", "agent-a", "")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := h.getTask("db", "agent-b", "")
	if err != nil || ta.LeaseID == tb.LeaseID || ta.Value == tb.Value {
		t.Fatalf("two identities' tasks share a lease (%v): %s, %s", err, ta.LeaseID, tb.LeaseID)
	}
	if _, err := h.getTask("db", "agent-b", a.ID); !errors.Is(err, lease.ErrUnknownTask) {
		t.Fatalf("agent-b naming agent-a's task: %v, want ErrUnknownTask", err)
	}
	h.begin(lease.TaskSpec{TTL: time.Hour}) // open to every caller: agent-a now has two
	if _, err := h.getTask("db", "agent-a", ""); !errors.Is(err, lease.ErrNoTask) || !strings.Contains(err.Error(), "2 open") {
		t.Fatalf("agent-a with two open tasks and none named: %v, want ErrNoTask saying 2 open", err)
	}
	if _, err := h.m.EndTask(context.Background(), a.ID); err != nil {
		t.Fatal(err)
	}
	if ls := h.m.List(); len(ls) != 1 || ls[0].ID != tb.LeaseID || ls[0].Task != b.ID {
		t.Fatalf("after ending agent-a's task: %+v, want only agent-b's lease", ls)
	}
}

// A task ended while its first lease is being acquired: the lease arrives
// after the end and is revoked unused, and the request fails.
func TestTaskEndedWhileAcquiring(t *testing.T) {
	h, _ := newTaskHarness(t)
	in := h.begin(lease.TaskSpec{TTL: time.Hour})
	release := h.src.HoldAcquire()
	done := make(chan error, 1)
	go func() { _, err := h.getTask("db", "", in.ID); done <- err }()
	for h.src.Acquires() == 0 {
		time.Sleep(time.Millisecond) // bounded by the test timeout; the Get starts at once
	}
	if _, err := h.m.EndTask(context.Background(), in.ID); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; !errors.Is(err, lease.ErrTaskEnded) {
		t.Fatalf("Get whose task ended mid-acquire: %v, want ErrTaskEnded", err)
	}
	lease.Settle(h.m)
	h.wantCounts(1, 0, 1)
	h.wantEvents("lease.created", "lease.revoked:task_end")
	if n := len(h.m.List()); n != 0 {
		t.Fatalf("%d leases held, want 0", n)
	}
}

// ctxSource is a test source whose Revoke fails on a done context, as a
// real store client's does.
type ctxSource struct{ *leasetest.Source }

func (s ctxSource) Revoke(ctx context.Context, g lease.Grant) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.Source.Revoke(ctx, g)
}

// A caller that has gone away (a cancelled context) still gets its task's
// leases revoked at the store: they are dropped already, and must not leak.
func TestTaskEndWithACancelledContextStillRevokes(t *testing.T) {
	h := newHarness(t, policy)
	db, openai := leasetest.NewSource(), leasetest.NewSource()
	m := lease.NewManager([]lease.Credential{
		{Name: "db", SourceName: "test", Source: ctxSource{db}, Policy: taskPolicy},
		{Name: "openai", SourceName: "test", Source: ctxSource{openai}, Policy: policy},
	}, h.options())
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	in, err := m.BeginTask(context.Background(), lease.TaskSpec{TTL: time.Hour, Credentials: []string{"db"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.EndTask(ctx, in.ID); err != nil || db.Revokes() != 1 {
		t.Fatalf("EndTask with a cancelled context: %v, %d revokes; want the lease revoked at its store anyway", err, db.Revokes())
	}
	tk, err := m.Get(context.Background(), "openai", "a", use)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, tk.LeaseID, ""); err != nil || openai.Revokes() != 1 {
		t.Fatalf("Revoke with a cancelled context: %v, %d revokes; want it revoked at its store anyway", err, openai.Revokes())
	}
	for _, e := range h.events() {
		if e["error"] != nil {
			t.Errorf("audit event %v has an error", e)
		}
	}
}

// Requests racing the end of their task: whatever interleaving, nothing is
// held afterwards and every lease acquired was revoked.
func TestTaskEndRacingRequestsLeavesNothing(t *testing.T) {
	h, _ := newTaskHarness(t)
	for round := range 20 {
		in := h.begin(lease.TaskSpec{TTL: time.Hour})
		done := make(chan struct{})
		for range 8 {
			go func() {
				defer func() { done <- struct{}{} }()
				for range 5 {
					_, _ = h.getTask("db", "agent-a", in.ID)
				}
			}()
		}
		if _, err := h.m.EndTask(context.Background(), in.ID); err != nil {
			t.Fatal(err)
		}
		for range 8 {
			<-done
		}
		lease.Settle(h.m)
		if n := len(h.m.List()); n != 0 || h.src.Acquires() != h.src.Revokes() {
			t.Fatalf("round %d: %d leases held, %d acquired, %d revoked; want none held, all revoked",
				round, n, h.src.Acquires(), h.src.Revokes())
		}
	}
}
