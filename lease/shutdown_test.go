package lease_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/credproxy/credproxy/lease"
)

func TestShutdownRevokesAll(t *testing.T) {
	p := policy
	p.PerIdentity = true
	h := newHarness(t, p)
	for _, id := range []string{"agent-a", "agent-b", "agent-c"} {
		h.get(id)
	}
	if err := h.m.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	h.wantCounts(3, 0, 3)
	h.wantEvents("lease.created", "lease.created", "lease.created",
		"lease.revoked:shutdown", "lease.revoked:shutdown", "lease.revoked:shutdown")
	if n := len(h.m.List()); n != 0 {
		t.Fatalf("List after Shutdown has %d leases, want 0", n)
	}
	if n := h.clock.Pending(); n != 0 {
		t.Fatalf("%d timers pending after Shutdown, want 0: the scheduler must stop", n)
	}
	if err := h.m.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v, want nil", err)
	}
}

func TestShutdownWithHangingRevokeReturnsAtDeadline(t *testing.T) {
	h := newHarness(t, policy)
	tk := h.get("agent-a")
	h.src.HangRevoke()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := h.m.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a hanging store: err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown took %v, want it to return when ctx expires", d)
	}
	if !strings.Contains(h.logs.String(), tk.LeaseID) {
		t.Fatalf("the lease left unrevoked (%s) is not logged; logs:\n%s", tk.LeaseID, h.logs.String())
	}
}

func TestShutdownRevokesAcquisitionInFlight(t *testing.T) {
	h := newHarness(t, policy)
	release := h.src.HoldAcquire()
	errc := make(chan error, 1)
	go func() {
		_, err := h.m.Get(context.Background(), "openai", "agent-a", use)
		errc <- err
	}()
	for h.src.Acquires() == 0 {
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- h.m.Shutdown(context.Background()) }()
	for !lease.Closed(h.m) { // Shutdown must have begun before the acquisition returns
		time.Sleep(time.Millisecond)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; !errors.Is(err, lease.ErrClosed) {
		t.Fatalf("Get racing Shutdown: err = %v, want ErrClosed", err)
	}
	h.wantCounts(1, 0, 1)
	h.wantEvents("lease.created", "lease.revoked:shutdown")
}
