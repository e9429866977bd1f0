package lease_test

import (
	"context"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
)

var dbUse = lease.Use{Rule: "reports", Purpose: "nightly report"}

func (h *harness) hold(identity string) (lease.Ticket, *lease.Hold) {
	h.t.Helper()
	tk, hd, err := h.m.GetHeld(context.Background(), "openai", identity, dbUse)
	if err != nil {
		h.t.Fatalf("GetHeld: %v", err)
	}
	return tk, hd
}

func ended(hd *lease.Hold) bool {
	select {
	case <-hd.Ended():
		return true
	default:
		return false
	}
}

// A held lease is in use: never idle-revoked, renewed while held; the idle
// timeout runs from the release of the last hold.
func TestHoldKeepsLeaseInUse(t *testing.T) {
	h := newHarness(t, policy)
	tk, a := h.hold("agent-a")
	_, b := h.hold("agent-b")
	if tk.Value != "sk-test-1" {
		t.Fatalf("GetHeld value = %q, want sk-test-1", tk.Value)
	}
	for range 30 { // 30m without a Get: idle is 5m, but the lease is held
		h.advance(time.Minute)
	}
	h.wantCounts(1, 3, 0) // renewed at 8m, 16m, 24m
	a.Release()
	a.Release() // idempotent
	for range 10 {
		h.advance(time.Minute)
	}
	h.wantCounts(1, 5, 0) // b still holds it: renewed at 32m and 40m
	b.Release()
	for range 4 {
		h.advance(time.Minute)
	}
	h.wantCounts(1, 5, 0)
	h.advance(time.Minute) // 5m after the last release
	h.wantCounts(1, 5, 1)
	if ended(a) != true {
		t.Fatalf("Ended not closed after the lease was revoked")
	}
	names := h.eventNames()
	want := map[string]int{"connection.opened": 2, "connection.closed": 2, "lease.revoked:idle": 1}
	for _, n := range names {
		if _, ok := want[n]; ok {
			want[n]--
		}
	}
	for n, left := range want {
		if left != 0 {
			t.Fatalf("audit events %q: %s off by %d", names, n, left)
		}
	}
	for _, e := range h.events() {
		if e["event"] == "connection.opened" && (e["rule"] != "reports" || e["purpose"] != "nightly report" || e["lease_id"] == "") {
			t.Fatalf("connection.opened event lacks rule, purpose or lease id: %v", e)
		}
	}
}

// Rotation: new holds get the new lease; the old one stays until its last
// hold is released, and ends (Ended closed) at its hard expiry.
func TestHoldRotatedLeaseKeptUntilReleaseOrExpiry(t *testing.T) {
	p := policy
	p.MaxTTL = 25 * time.Minute
	h := newHarness(t, p)
	_, old := h.hold("agent-a")
	for range 16 {
		h.advance(time.Minute)
	} // 16m: rotated
	tk, cur := h.hold("agent-a")
	if tk.Value != "sk-test-2" {
		t.Fatalf("after rotation GetHeld value = %q, want sk-test-2", tk.Value)
	}
	h.advance(time.Minute) // the grace is over, but old is held
	h.wantCounts(2, 1, 0)
	if ended(old) {
		t.Fatalf("held rotated-out lease ended before its expiry")
	}
	for range 7 {
		h.advance(time.Minute)
	} // 24m: old lease renewed at 8m to 18m... then expired at 18m
	if !ended(old) {
		t.Fatalf("held rotated-out lease did not end at its expiry")
	}
	h.wantCounts(2, 2, 1) // expired (revoked at the source); the new one renewed
	if ended(cur) {
		t.Fatalf("the current lease ended with the old one")
	}
	old.Release()
	cur.Release()
}

// A rotated-out lease whose last hold is released is revoked then.
func TestHoldReleaseRetiresRotatedLease(t *testing.T) {
	p := policy
	p.MaxTTL = 25 * time.Minute
	h := newHarness(t, p)
	_, old := h.hold("agent-a")
	for range 16 {
		h.advance(time.Minute)
	}
	_ = h.get("agent-a")
	h.advance(time.Minute)
	h.wantCounts(2, 1, 0)
	old.Release()
	lease.Settle(h.m)
	h.wantCounts(2, 1, 1)
	h.wantCalls("acquire sk-test-1", "renew sk-test-1", "acquire sk-test-2", "revoke sk-test-1")
}

func TestHoldEndsAtShutdownAndManualRevoke(t *testing.T) {
	h := newHarness(t, policy)
	tk, a := h.hold("agent-a")
	if err := h.m.Revoke(context.Background(), tk.LeaseID, ""); err != nil {
		t.Fatal(err)
	}
	if !ended(a) {
		t.Fatalf("Ended not closed by a manual revoke")
	}
	a.Release()
	_, b := h.hold("agent-a")
	if err := h.m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !ended(b) {
		t.Fatalf("Ended not closed by shutdown")
	}
	b.Release()
	if _, _, err := h.m.GetHeld(context.Background(), "openai", "agent-a", dbUse); err == nil {
		t.Fatalf("GetHeld after shutdown: want an error")
	}
}
