package lease_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
)

// keepUsing advances the clock a minute at a time, using the lease each time.
func (h *harness) keepUsing(minutes int) lease.Ticket {
	var tk lease.Ticket
	for range minutes {
		h.advance(time.Minute)
		tk = h.get("agent-a")
	}
	return tk
}

func TestRenewWhenInUse(t *testing.T) {
	h := newHarness(t, policy)
	first := h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(7)
	h.wantCounts(1, 0, 0)
	h.keepUsing(1) // 8m: 2m before expiry, used 1m ago
	h.wantCounts(1, 1, 0)
	if tk := h.keepUsing(3); tk.LeaseID != first.LeaseID { // 11m: past the first expiry
		t.Fatalf("after renewal Get returned lease %s, want the renewed %s", tk.LeaseID, first.LeaseID)
	}
	info := h.m.List()[0]
	if info.Renewals != 1 || !info.Expires.Equal(t0.Add(18*time.Minute)) {
		t.Fatalf("List = %+v, want 1 renewal and expiry at 18m", info)
	}
	h.wantEvents("lease.created", "lease.renewed")
}

func TestIdleLeaseRevokedNotRenewed(t *testing.T) {
	h := newHarness(t, policy)
	h.wantValue("agent-a", "sk-test-1")
	h.advance(5*time.Minute - time.Second)
	h.wantCounts(1, 0, 0)
	h.advance(time.Second)
	h.wantCounts(1, 0, 1)
	if n := len(h.m.List()); n != 0 {
		t.Fatalf("List has %d leases after the idle timeout, want 0", n)
	}
	h.advance(10 * time.Minute) // nothing left to renew or expire
	h.wantCounts(1, 0, 1)
	h.wantValue("agent-a", "sk-test-2")
	h.wantEvents("lease.created", "lease.revoked:idle", "lease.created")
}

func TestCapDetectedRotatesWithoutGap(t *testing.T) {
	h := newHarness(t, policy)
	h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(7)
	h.src.SetCap(5 * time.Minute)
	h.keepUsing(1) // 8m: renewal granted 5m of the 10m asked: capped, expires 13m
	h.wantCounts(1, 1, 0)
	if exp := h.m.List()[0].Expires; !exp.Equal(t0.Add(13 * time.Minute)) {
		t.Fatalf("capped lease expires at %v, want 13m (the store's cap is a hard deadline)", exp.Sub(t0))
	}
	h.keepUsing(2) // 10m

	release := h.src.HoldAcquire()
	h.clock.Advance(time.Minute) // 11m: 2m before the capped deadline: rotate
	lease.SyncScheduler(h.m)
	for h.src.Acquires() < 2 {
		runtime.Gosched() // until the replacement's acquisition is underway
	}
	if st := h.m.List()[0].State; st != "rotating" {
		t.Fatalf("state during rotation = %q, want rotating", st)
	}
	for range 10 { // Gets during rotation keep the old, still valid lease
		h.wantValue("agent-a", "sk-test-1")
	}
	h.wantCounts(2, 1, 0)
	release()
	lease.Settle(h.m)
	h.wantValue("agent-a", "sk-test-2")
	// The old lease stays valid a short grace for requests still using it.
	h.wantCalls("acquire sk-test-1", "renew sk-test-1", "acquire sk-test-2")
	h.clock.Advance(5 * time.Second)
	lease.SyncScheduler(h.m)
	lease.Settle(h.m)
	h.wantCalls("acquire sk-test-1", "renew sk-test-1", "acquire sk-test-2", "revoke sk-test-1")
	h.wantEvents("lease.created", "lease.renewed", "lease.created", "lease.revoked:rotated")
}

func TestMaxTTLRotation(t *testing.T) {
	p := policy
	p.MaxTTL = 25 * time.Minute
	h := newHarness(t, p)
	h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(8) // renewed at 8m to 18m: 8m+10m fits in 25m
	h.wantCounts(1, 1, 0)
	h.keepUsing(7)
	h.wantCounts(1, 1, 0)
	h.keepUsing(1) // 16m: a renewal to 26m would pass MaxTTL: rotate
	h.wantCounts(2, 1, 0)
	h.keepUsing(1) // 17m: the old lease's grace is over
	h.wantCounts(2, 1, 1)
	h.wantValue("agent-a", "sk-test-2")
	h.wantEvents("lease.created", "lease.renewed", "lease.created", "lease.revoked:rotated")
	for range 60 {
		h.keepUsing(1)
		now := h.clock.Now()
		for _, in := range h.m.List() {
			if now.Sub(in.Issued) >= p.MaxTTL || in.Expires.Sub(in.Issued) > p.MaxTTL {
				t.Fatalf("at %v lease %+v outlives MaxTTL %v", now.Sub(t0), in, p.MaxTTL)
			}
		}
	}
}

func TestNotRenewableGrantRotates(t *testing.T) {
	h := newHarness(t, policy)
	h.src.SetRenewable(false)
	h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(8)
	h.wantCounts(2, 0, 0) // rotated at 8m; the old lease is in its grace
	h.wantValue("agent-a", "sk-test-2")
	h.keepUsing(1)
	h.wantCounts(2, 0, 1)
}

// A rotated-out lease still in its grace is revoked at shutdown too.
func TestShutdownRevokesLeaseInRotationGrace(t *testing.T) {
	h := newHarness(t, policy)
	h.src.SetRenewable(false)
	h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(8)
	h.wantCounts(2, 0, 0)
	if err := h.m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.wantCounts(2, 0, 2)
}

func TestExpiryWithoutAutoRenew(t *testing.T) {
	p := policy
	p.AutoRenew, p.IdleTimeout = false, 0
	h := newHarness(t, p)
	h.wantValue("agent-a", "sk-test-1")
	h.advance(10*time.Minute - time.Second)
	h.wantValue("agent-a", "sk-test-1")
	h.advance(time.Second)
	h.wantCounts(1, 0, 1) // the source is still told: a store without TTLs would keep it
	h.wantEvents("lease.created", "lease.expired")
	h.wantValue("agent-a", "sk-test-2")
}

func TestGetNeverReturnsAnExpiredLease(t *testing.T) {
	p := policy
	p.AutoRenew, p.IdleTimeout = false, 0
	h := newHarness(t, p)
	h.wantValue("agent-a", "sk-test-1")
	h.clock.Advance(10 * time.Minute) // no Settle: the scheduler may not have run yet
	h.wantValue("agent-a", "sk-test-2")
	lease.Settle(h.m)
	h.wantEvents("lease.created", "lease.expired", "lease.created")
}

func TestPermanentRenewFailureReacquires(t *testing.T) {
	h := newHarness(t, policy)
	h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(7)
	h.src.FailRenew(fmt.Errorf("vault: lease not found: %w", lease.ErrPermanent))
	h.keepUsing(1) // the renewal at 8m fails for good: the lease is dropped
	h.wantCounts(2, 1, 1)
	h.wantValue("agent-a", "sk-test-2")
	h.wantEvents("lease.created", "lease.failed", "lease.revoked:renew_failed", "lease.created")
}

func TestTransientRenewFailureRetries(t *testing.T) {
	h := newHarness(t, policy)
	h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(7)
	h.src.FailRenew(errors.New("vault: sealed"))
	h.keepUsing(1) // 8m: fails, retry in 250ms
	if st := h.m.List()[0].State; st != "retrying" {
		t.Fatalf("state after a failed renewal = %q, want retrying", st)
	}
	h.advance(250 * time.Millisecond) // fails again, retry in 500ms
	h.wantCounts(1, 2, 0)
	h.src.FailRenew(nil)
	h.advance(500 * time.Millisecond)
	h.wantCounts(1, 3, 0)
	h.wantValue("agent-a", "sk-test-1")
	h.wantEvents("lease.created", "lease.failed", "lease.failed", "lease.renewed")
}

func TestRenewFailingUntilExpiry(t *testing.T) {
	h := newHarness(t, policy)
	h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(7)
	h.src.FailRenew(errors.New("vault: unreachable"))
	h.keepUsing(1)   // 8m: the first attempt fails
	for range 1200 { // retries back off (250ms doubling to 30s) until expiry at 10m
		h.advance(100 * time.Millisecond)
	}
	h.wantEvents(append([]string{"lease.created"}, append(repeat("lease.failed", h.src.Renews()), "lease.expired")...)...)
	if n := len(h.m.List()); n != 0 {
		t.Fatalf("List has %d leases after expiry, want 0", n)
	}
	h.wantValue("agent-a", "sk-test-2")
	if got := h.src.Renews(); got != 10 { // 8m, then +.25s +.5s +1s +2s +4s +8s +16s +30s +30s
		t.Fatalf("renew attempts in the last 2m = %d, want 10 with backoff", got)
	}
}

func TestOneTimerForAllLeases(t *testing.T) {
	p := policy
	p.PerIdentity = true
	h := newHarness(t, p)
	for _, id := range []string{"agent-a", "agent-b", "agent-c"} {
		h.get(id)
		h.advance(time.Second)
	}
	if n := h.clock.Pending(); n != 1 {
		t.Fatalf("pending timers = %d, want the scheduler's one timer", n)
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestLeaseExpiresWhileItsRenewalHangs(t *testing.T) {
	p := policy
	p.RenewBeforeExpiry = 2 * time.Minute
	h := newHarness(t, p)
	h.wantValue("agent-a", "sk-test-1")
	h.keepUsing(7)
	release := h.src.HoldRenew()
	defer release()
	h.clock.Advance(time.Minute) // 8m: the renewal starts and hangs
	lease.SyncScheduler(h.m)
	for h.src.Renews() == 0 {
		runtime.Gosched()
	}
	h.clock.Advance(2 * time.Minute) // 10m: expiry
	lease.SyncScheduler(h.m)
	if n := len(h.m.List()); n != 0 {
		t.Fatalf("List has %d leases past expiry while a renewal hangs, want 0", n)
	}
	release()
	lease.Settle(h.m)
	h.wantEvents("lease.created", "lease.expired")
	h.wantValue("agent-a", "sk-test-2")
}
